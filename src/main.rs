//! `tickcast`: parse flags → `Config` → run → exit code.

use std::io::Write;
use std::process::ExitCode;

use tickcast::cli::Command;
use tickcast::config::Config;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (cli, given) = tickcast::cli::parse();
    let sub = match cli.command {
        Some(Command::Record(r)) => Some(("record", tickcast::record::run(r))),
        Some(Command::Bench(b)) => Some(("bench", tickcast::bench::run(*b))),
        Some(Command::Tail(t)) => Some(("tail", tickcast::tail::run(t))),
        Some(Command::ShmProbe(p)) => Some(("shm-probe", tickcast::bench::shm::probe(p))),
        Some(Command::HashKey { key }) => {
            println!("{}", tickcast::auth::hash_line(&key));
            return ExitCode::SUCCESS;
        }
        None => None,
    };
    if let Some((name, res)) = sub {
        return match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickcast {name}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.flags, given) {
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
