//! `tickcast`: parse flags → `Config` → run → exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tickcast::config::{Args, Command, Config};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = Args::parse();
    if let Some(Command::Record(r)) = args.command.take() {
        return match tickcast::record::run(r) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickcast record: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tickcast: {e:#}");
            return ExitCode::from(2);
        }
    };
    let res = tickcast::server::run(config);
    let _ = std::io::stdout().flush();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}
