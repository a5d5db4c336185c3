//! Feed sources: each runs on its own thread, turns its input into complete
//! [`Tick`](crate::tick::Tick)s and hands them to [`Fanout::publish`], which
//! caches them and pushes them to interested workers.
//!
//! A source must never block on a worker and never panic on bad input; it
//! reports its health through [`FeedHealth`], which `/status` and every
//! client heartbeat show.

pub mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::config::FeedSpec;
use crate::instrument::Registry;
use crate::ring::{Fanout, PushStats};

/// A tick older than this makes a live feed `stale`.
pub const STALE_AFTER_MS: u64 = 5_000;

/// `FeedHealth::state` value: starting up or reconnecting.
pub const STATE_CONNECTING: u8 = 0;
/// `FeedHealth::state` value: delivering.
pub const STATE_LIVE: u8 = 1;
/// `FeedHealth::state` value: stopped (thread ended or source gone).
pub const STATE_DOWN: u8 = 2;
/// `FeedHealth::state` value: idle on purpose (market closed).
pub const STATE_PAUSED: u8 = 3;

/// What a feed reports about itself; shared with workers and `/status`.
pub struct FeedHealth {
    /// Display name (`sim`, `sim#2`).
    pub name: String,
    /// Source kind (`sim`).
    pub kind: &'static str,
    /// One of the `STATE_*` values.
    pub state: AtomicU8,
    /// Ticks published.
    pub ticks: AtomicU64,
    /// Receive time of the newest tick, ns since epoch (0: none yet).
    pub last_tick_ns: AtomicU64,
    /// Ring push counters (overruns).
    pub push: Arc<PushStats>,
}

impl FeedHealth {
    /// Health for a new source.
    pub fn new(name: String, kind: &'static str) -> FeedHealth {
        FeedHealth {
            name,
            kind,
            state: AtomicU8::new(STATE_CONNECTING),
            ticks: AtomicU64::new(0),
            last_tick_ns: AtomicU64::new(0),
            push: Arc::new(PushStats::default()),
        }
    }

    /// Milliseconds since the newest tick, if there was one.
    pub fn last_tick_age_ms(&self, now_ns: u64) -> Option<u64> {
        match self.last_tick_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now_ns.saturating_sub(t) / 1_000_000),
        }
    }

    /// `connecting`, `live`, `stale` (live but silent for `STALE_AFTER_MS`),
    /// `paused` (market closed) or `down`.
    pub fn state_name(&self, now_ns: u64) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            STATE_LIVE if self.last_tick_age_ms(now_ns).is_some_and(|a| a > STALE_AFTER_MS) => "stale",
            STATE_LIVE => "live",
            STATE_DOWN => "down",
            STATE_PAUSED => "paused",
            _ => "connecting",
        }
    }

    /// Record a batch of `n` ticks published at `now_ns`.
    #[inline]
    pub fn published(&self, n: u64, now_ns: u64) {
        self.ticks.fetch_add(n, Ordering::Relaxed);
        self.last_tick_ns.store(now_ns, Ordering::Relaxed);
    }
}

/// Everything a running source needs.
pub struct FeedCtx {
    /// Where ticks go.
    pub fanout: Fanout,
    /// Where health goes.
    pub health: Arc<FeedHealth>,
    /// Set when the process is stopping; sources return promptly.
    pub shutdown: Arc<AtomicBool>,
    /// Instruments (token → slot, tick sizes).
    pub registry: Arc<Registry>,
    /// Market open now (sources that generate data pause while closed).
    pub market_open: Arc<AtomicBool>,
}

/// A feed source, run on its own thread until shutdown.
pub trait Source: Send + 'static {
    /// Kind name for health reports.
    fn kind(&self) -> &'static str;
    /// Run until `ctx.shutdown` is set.
    fn run(self: Box<Self>, ctx: FeedCtx);
}

/// Build the sources for `specs`. Simulators split the master between them
/// (slot `i` belongs to simulator `i % n`) so every slot has one writer.
pub fn build(specs: &[FeedSpec], registry: &Registry) -> Vec<Box<dyn Source>> {
    let sims = specs.iter().filter(|s| matches!(s, FeedSpec::Sim { .. })).count();
    let mut sim_index = 0;
    specs
        .iter()
        .map(|spec| match spec {
            FeedSpec::Sim { rate } => {
                let s = sim::Sim::new(registry, *rate, sim_index, sims, fastrand::u64(..));
                sim_index += 1;
                Box::new(s) as Box<dyn Source>
            }
        })
        .collect()
}

/// Unique display names: `sim`, then `sim#2`, `sim#3` for repeats.
pub fn names(sources: &[Box<dyn Source>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(sources.len());
    for s in sources {
        let n = out.iter().filter(|o| o.split('#').next() == Some(s.kind())).count();
        out.push(if n == 0 { s.kind().to_string() } else { format!("{}#{}", s.kind(), n + 1) });
    }
    out
}

/// True once `flag` is set (Relaxed is enough: it is a stop request).
#[inline]
pub fn stopping(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}
