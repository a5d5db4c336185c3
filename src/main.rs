//! `tickcast`: parse flags → `Config` → run → exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tickcast::config::{Args, Config};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::load(Args::parse()) {
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
