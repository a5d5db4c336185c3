//! The command line: `tickcast [FLAGS]` runs the server (its flags are
//! `config::Flags`, also a TOML file's keys); a subcommand runs a tool
//! instead (record, bench, tail, hash-key). Parsed in `main.rs`; nothing
//! below it depends on this module.

use clap::Parser;

use crate::config::{Flags, Sources};

/// The process's command line, and where each server setting came from
/// (for errors that name it). Exits as clap does on `--help`, `--version`
/// and bad arguments.
pub fn parse() -> (Cli, Sources) {
    crate::config::parse_args(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
}

/// `tickcast`'s command line.
#[derive(Parser, Debug)]
#[command(name = "tickcast", version, about = "Low-latency market-data fan-out over WebSocket.", long_about = None)]
pub struct Cli {
    /// What to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// Subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Record feed sources to a TCF1 file that `--feed replay:PATH` plays back.
    Record(crate::record::RecordArgs),
    /// Open-loop latency benchmark: TCF1 over UDP in, many WebSocket clients out.
    Bench(Box<crate::bench::BenchArgs>),
    /// A shared-memory reader process of `tickcast bench --shm-readers` (not for direct use).
    #[command(hide = true)]
    ShmProbe(crate::bench::shm::ProbeArgs),
    /// Print the ticks of a shared-memory region (`--shm NAME` of a running server) as they arrive.
    Tail(crate::tail::TailArgs),
    /// Print the `keys` entry of an auth file for an API key (its SHA-256).
    HashKey {
        /// The API key to hash.
        key: String,
    },
}
