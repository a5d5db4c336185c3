//! tickcast: market data in from feeds, out over WebSocket to many clients.
//!
//! ```text
//!  feed thread(s)                 SPSC rings               worker threads (mio)
//!  sim ──► Tick ──► Fanout::publish ──► one per worker ──► drain ──► subs[slot] ──► encode once
//!                   │ last-value cache                                   │           per encoding
//!                   └ interest bits (only workers that care)             └─► append to each
//!                                                                           client's out-buffer
//!                                                                           → one writev per turn
//! ```
//!
//! With `--feed-poll worker` (the default with one worker) a UDP feed has no
//! thread of its own: its socket sits in a worker's `mio::Poll`, and the same
//! turn reads the datagram, publishes through the rings and fans it out.
//!
//! Modules, in the order a tick travels:
//! - [`cli`]: the command line (server flags, subcommands), used by `main`.
//! - [`config`]: the server's flags and TOML → validated `Config`.
//! - [`instrument`]: the registry; token → slot (direct index), symbol → slot.
//! - [`kite`]: Kite's ticker packets both ways (the `/kite` dialect, the `kite://` source).
//! - [`tick`]: the normalised `Tick` and fixed-point prices.
//! - [`channel`]: named channels (opaque payloads) and their frames.
//! - [`feed`]: sources (simulator, UDP, TCP, replay, Redis, a Kite ticker) and their health.
//! - [`lvc`]: the per-slot last-value cache (seqlock).
//! - [`shm`]: `--shm`: every tick into a shared-memory region that
//!   co-located processes read without a system call (and the reader library);
//!   [`sys`]: the mapped memory and system calls under it, the crate's only `unsafe`.
//! - [`demand`]: what local clients want of a limited upstream (`kite://`).
//! - [`ring`]: rings, interest bits and the wake protocol.
//! - [`worker`]: the event loop, split by job: the duty cycle (`mod.rs`),
//!   sockets, the upgrade and WebSocket messages, the subscription API,
//!   fan-out (the hot path), timers.
//! - [`dialect`]: the client protocols (native and the five seed
//!   protocols), sans-IO: driven by messages and `now`, they ask a `Host`
//!   (the worker; `Pair` in unit tests) for everything.
//! - [`auth`]: users, hashed API keys, roles, per-user limits.
//! - [`subs`]: the per-worker, slot-indexed subscription table.
//! - [`encode`]: JSON, rkyv and seed-dialect frames, built once per (tick, encoding).
//! - [`ws`]: WebSocket frames, handshake and message reassembly, sans-IO.
//! - [`http`]: `/status`, `/metrics`, `/healthz`, the page: answered on the
//!   `http` thread, never on a worker's loop.
//! - [`shared`]: the state every thread shares (below the worker and the
//!   server that starts it: no import circles; `scripts/check-imports`).
//! - [`metrics`]: counters and latency histograms.
//! - [`process`]: the standard `process_*` metrics, from `/proc/self`.
//! - [`session`]: subscriptions kept for reconnecting client ids.
//! - [`market`]: market hours (when the simulator runs, `market_status`).
//! - [`server`]: start-up, threads, pinning, shutdown.
//! - [`mirror`]: `--publish redis://`, every tick and channel message to Redis.
//! - [`bench`](mod@bench): `tickcast bench`, the open-loop latency harness.
//! - [`record`]: `tickcast record`, sources to a replayable TCF1 file.
//! - [`tail`]: `tickcast tail`, a shared-memory region's ticks on the terminal.
//! - `fuzzing` (feature `fuzzing`, hidden): what the cargo-fuzz targets in `fuzz/` need.

// `unsafe` lives in one place, `sys` (mmap, futex, locks), which allows it
// explicitly; anywhere else it is a visible, argued exception.
#![deny(unsafe_code)]

/// Name and version sent in the native welcome and `/status`.
pub const SERVER_NAME: &str = concat!("tickcast ", env!("CARGO_PKG_VERSION"));

pub mod auth;
pub mod bench;
pub mod channel;
pub mod cli;
pub mod config;
pub mod demand;
pub mod dialect;
pub mod encode;
pub mod feed;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod instrument;
pub mod kite;
pub mod lvc;
pub mod market;
pub mod metrics;
pub mod mirror;
pub mod process;
pub mod record;
pub mod ring;
pub mod server;
pub mod session;
pub mod shared;
pub mod shm;
pub mod subs;
pub mod sys;
pub mod tail;
pub mod tick;
pub mod tls;
pub mod worker;
pub mod ws;
