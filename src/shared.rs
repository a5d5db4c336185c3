//! State every thread shares: the validated configuration, the registry,
//! the hub (rings, interest, last values), feed health, counters, sessions,
//! users. Read-mostly; the few writable parts are atomics or control-plane
//! locks. Built by `server`, read by workers, feeds and the HTTP surfaces;
//! it depends on none of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::feed::FeedHealth;
use crate::instrument::Registry;
use crate::metrics::{Counters, WorkerGauges};
use crate::ring::Hub;
use crate::session::Sessions;

/// State shared by all threads. Read-mostly; the few writable parts are
/// atomics or control-plane locks.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// Instruments.
    pub registry: Arc<Registry>,
    /// Interest bits and last values.
    pub hub: Hub,
    /// Named channels.
    pub channels: Arc<crate::channel::Channels>,
    /// Health of the `--publish` mirror, if any.
    pub mirror: Option<Arc<FeedHealth>>,
    /// Health of each feed, in `--feed` order.
    pub feeds: Vec<Arc<FeedHealth>>,
    /// Event counters.
    pub counters: Counters,
    /// One per worker.
    pub gauges: Vec<WorkerGauges>,
    /// Saved subscriptions of disconnected client ids.
    pub sessions: Sessions,
    /// Set to stop every thread.
    pub shutdown: Arc<AtomicBool>,
    /// Open connections across workers (the connection cap).
    pub open_connections: AtomicU64,
    /// Market open now, per `config.market_hours` (updated by `run`).
    pub market_open: Arc<AtomicBool>,
    /// Process start.
    pub started: Instant,
    /// Users and API keys.
    pub auth: crate::auth::Auth,
    /// Open connections per dialect (`Dialect as usize`).
    pub dialect_connections: [AtomicU64; crate::dialect::Dialect::COUNT],
    /// The OpenAlgo listener's address, once bound.
    pub openalgo_addr: Option<SocketAddr>,
    /// The Kite listener's address (`--kite-listen`), once bound.
    pub kite_addr: Option<SocketAddr>,
    /// TLS per listener, and its counters.
    pub tls: crate::tls::Tls,
}

impl Shared {
    /// What feed states are judged against at `now_ns`: the market now and
    /// `--stale-after`.
    pub fn judge(&self, now_ns: u64) -> crate::feed::Judge {
        crate::feed::Judge {
            now_ns,
            market_open: self.market_open.load(std::sync::atomic::Ordering::Relaxed),
            stale_after_ns: crate::tick::ns(self.config.stale_after),
        }
    }
}
