//! Feed sources: each runs on its own thread, turns its input into complete
//! [`Tick`](crate::tick::Tick)s and hands them to [`Fanout::publish`], which
//! caches them and pushes them to interested workers. A source that is one
//! socket (UDP) can instead be [`Polled`] inside a worker's event loop
//! (`--feed-poll worker`): no thread hand-off and no wake-up per packet,
//! which is what a worker sharing its core with the feed needs.
//!
//! A source must never block on a worker and never panic on bad input; it
//! reports its health through [`FeedHealth`], which `/status`, `/healthz`,
//! `/metrics` and every client heartbeat show. What a source reports (its
//! link is up) is not enough to call it `live`: [`FeedHealth::state_name`]
//! also judges its silence ([`Judge`]): a feed that has delivered nothing,
//! or nothing for longer than `--stale-after`, while the market is open, is
//! `stale`.

pub mod kite;
pub(crate) mod listen;
pub mod publish;
pub mod redis;
pub mod replay;
pub mod sim;
pub mod spec;
pub mod tcf1;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::instrument::Registry;
use crate::ring::{Fanout, PushStats};
use spec::FeedSpec;

/// `FeedHealth::state` value: starting up or reconnecting.
pub const STATE_CONNECTING: u8 = 0;
/// `FeedHealth::state` value: delivering.
pub const STATE_LIVE: u8 = 1;
/// `FeedHealth::state` value: stopped (thread ended or source gone).
pub const STATE_DOWN: u8 = 2;
/// `FeedHealth::state` value: idle on purpose (market closed).
pub const STATE_PAUSED: u8 = 3;
/// `FeedHealth::state` value: was live, its upstream link is lost and being
/// reopened; the values clients hold are getting old (shown as `stale`).
pub const STATE_STALE: u8 = 4;

/// What a feed reports about itself; shared with workers and `/status`.
pub struct FeedHealth {
    /// Display name (`sim`, `sim#2`).
    pub name: String,
    /// Source kind (`sim`, `udp`, `tcp`, `replay`).
    pub kind: &'static str,
    /// Where it reads from (`239.1.1.1:9000`, a path; empty for `sim`).
    pub address: String,
    /// Packets received (TCF1 sources).
    pub packets: AtomicU64,
    /// Packets missing according to `packet_seq` jumps.
    pub packet_gaps: AtomicU64,
    /// Reconnects / publisher connections accepted.
    pub reconnects: AtomicU64,
    /// Input refused as a whole (publish port: bad lines).
    pub rejected: AtomicU64,
    /// Packets or records dropped, by `tcf1::DropReason`.
    pub drops: [AtomicU64; tcf1::DropReason::NAMES.len()],
    /// One of the `STATE_*` values.
    pub state: AtomicU8,
    /// Ticks published.
    pub ticks: AtomicU64,
    /// Receive time of the newest tick, ns since epoch (0: none yet).
    pub last_tick_ns: AtomicU64,
    /// Since when the source has been expected to deliver, ns since epoch:
    /// 0 for a source that pushes on its own (sim, UDP, TCP, replay, the
    /// publish port: expected from the start); for one that follows local
    /// demand (`kite`, `redis`), when its upstream subscriptions last went
    /// from none to some, or [`NOTHING_WANTED`]. Silence is counted from
    /// the later of this and the newest tick.
    pub wanted_since_ns: AtomicU64,
    /// Ring push counters (overruns).
    pub push: Arc<PushStats>,
    /// The worker that reads it (`--feed-poll worker`), or `OWN_THREAD`.
    pub read_by: AtomicUsize,
    /// Upstream links, subscriptions and decode errors of a `kite` source
    /// (present exactly when `kind` is `kite`).
    pub kite: Option<kite::KiteHealth>,
}

/// `FeedHealth::read_by` of a feed that runs on its own thread.
pub const OWN_THREAD: usize = usize::MAX;

/// `FeedHealth::wanted_since_ns` of a source that follows demand and has
/// nothing subscribed upstream: its silence is not staleness.
pub const NOTHING_WANTED: u64 = u64::MAX;

/// What a feed's state is judged against besides its own report: the
/// time, the market, and how long a feed may be silent (`--stale-after`).
#[derive(Clone, Copy, Debug)]
pub struct Judge {
    /// Now, ns since epoch.
    pub now_ns: u64,
    /// The market is open (silence outside hours is `paused`, not `stale`).
    pub market_open: bool,
    /// Longest silence of a live feed, ns.
    pub stale_after_ns: u64,
}

/// How long a feed expected to deliver has been silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// It has delivered nothing yet.
    Never,
    /// Its newest tick is this many ns old.
    For(u64),
}

impl FeedHealth {
    /// Health for a new source.
    pub fn new(name: String, kind: &'static str, address: String) -> FeedHealth {
        FeedHealth {
            name,
            kind,
            address,
            packets: AtomicU64::new(0),
            packet_gaps: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            drops: Default::default(),
            state: AtomicU8::new(STATE_CONNECTING),
            ticks: AtomicU64::new(0),
            last_tick_ns: AtomicU64::new(0),
            wanted_since_ns: AtomicU64::new(if matches!(kind, "kite" | "redis") { NOTHING_WANTED } else { 0 }),
            push: Arc::new(PushStats::default()),
            read_by: AtomicUsize::new(OWN_THREAD),
            kite: (kind == "kite").then(kite::KiteHealth::default),
        }
    }

    /// Which thread reads it: `thread` (its own) or `worker-N`.
    pub fn read_by_name(&self) -> String {
        match self.read_by.load(Ordering::Relaxed) {
            OWN_THREAD => "thread".into(),
            w => format!("worker-{w}"),
        }
    }

    /// Nanoseconds since the newest tick, if there was one.
    pub fn last_tick_age_ns(&self, now_ns: u64) -> Option<u64> {
        match self.last_tick_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(now_ns.saturating_sub(t)),
        }
    }

    /// Milliseconds since the newest tick, if there was one.
    pub fn last_tick_age_ms(&self, now_ns: u64) -> Option<u64> {
        self.last_tick_age_ns(now_ns).map(|a| a / 1_000_000)
    }

    /// A demand-following source has `n` instruments subscribed upstream
    /// now (`now_ns`): with none it cannot be silent; from none to some its
    /// silence is counted from now.
    pub fn wanted(&self, n: u64, now_ns: u64) {
        if n == 0 {
            self.wanted_since_ns.store(NOTHING_WANTED, Ordering::Relaxed);
        } else if self.wanted_since_ns.load(Ordering::Relaxed) == NOTHING_WANTED {
            self.wanted_since_ns.store(now_ns, Ordering::Relaxed);
        }
    }

    /// A demand-following source reopened its upstream link and asked again
    /// for what is wanted: its silence counts from `now_ns` (not from its
    /// newest tick, before the outage).
    pub fn resubscribed(&self, now_ns: u64) {
        if self.wanted_since_ns.load(Ordering::Relaxed) != NOTHING_WANTED {
            self.wanted_since_ns.store(now_ns, Ordering::Relaxed);
        }
    }

    /// Whether, and how long, a feed expected to deliver has been silent
    /// past `j.stale_after_ns` (`None`: not silent, or not expected to be
    /// delivering).
    pub fn silence(&self, j: &Judge) -> Option<Silence> {
        let since = self.wanted_since_ns.load(Ordering::Relaxed);
        if since == NOTHING_WANTED {
            return None;
        }
        let last = self.last_tick_ns.load(Ordering::Relaxed);
        let quiet = j.now_ns.saturating_sub(last.max(since));
        match last {
            0 if since == 0 || quiet > j.stale_after_ns => Some(Silence::Never),
            0 => None,
            _ if quiet > j.stale_after_ns => Some(Silence::For(j.now_ns.saturating_sub(last))),
            _ => None,
        }
    }

    /// `connecting`, `live`, `stale` (its source is up but it has delivered
    /// nothing, or nothing for `--stale-after`, while the market is open; or
    /// its upstream link is lost: `STATE_STALE`), `paused` (market closed:
    /// the simulator stops, other sources go quiet) or `down`.
    pub fn state_name(&self, j: &Judge) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            STATE_LIVE => match (self.silence(j), j.market_open) {
                (None, _) => "live",
                (Some(_), true) => "stale",
                (Some(_), false) => "paused",
            },
            STATE_DOWN => "down",
            STATE_PAUSED => "paused",
            STATE_STALE => "stale",
            _ => "connecting",
        }
    }

    /// Why the feed is in its state, for `/healthz`: `stale (nothing
    /// delivered for 7.5 s; limit 5 s)`.
    pub fn why(&self, j: &Judge) -> String {
        let state = self.state_name(j);
        let limit = j.stale_after_ns as f64 / 1e9;
        let detail = match (self.state.load(Ordering::Relaxed), self.silence(j)) {
            (STATE_LIVE, Some(Silence::Never)) => format!("nothing delivered yet; limit {limit} s"),
            (STATE_LIVE, Some(Silence::For(ns))) => {
                format!("nothing delivered for {:.1} s; limit {limit} s", ns as f64 / 1e9)
            }
            (STATE_LIVE, None) => "delivering".into(),
            (STATE_STALE, _) => "upstream link lost, reconnecting".into(),
            (STATE_DOWN, _) => "the source stopped".into(),
            (STATE_PAUSED, _) => "market closed".into(),
            _ => "not up yet".into(),
        };
        format!("{state} ({detail})")
    }

    /// Count a dropped packet or record.
    #[inline]
    pub fn dropped(&self, why: tcf1::DropReason) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
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
    /// Channel rings, for sources that publish named channels.
    pub channels: Option<crate::ring::ChannelFanout>,
    /// The channel table (names ↔ ids, sequence numbers).
    pub channel_table: Arc<crate::channel::Channels>,
    /// What local clients want of a limited upstream (set with a `kite://` feed).
    pub demand: Option<Arc<crate::demand::Demand>>,
}

/// Exponential backoff from `min` doubling to `max`, with ±25% jitter so
/// many clients of one upstream do not retry in step.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1 << attempt.min(16)).min(max);
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Counts `packet_seq` jumps of one packet stream (a UDP source, one TCP
/// publisher): a jump forward is packets lost upstream.
#[derive(Default)]
pub struct PacketSeq {
    last: Option<u64>,
}

impl PacketSeq {
    /// Observe `seq`; returns how many packets were skipped before it.
    /// A jump backwards (a restarted publisher) starts a new stream.
    #[inline]
    pub fn observe(&mut self, seq: u64) -> u64 {
        let gap = match self.last {
            Some(last) if seq > last => seq - last - 1,
            _ => 0,
        };
        self.last = Some(seq);
        gap
    }
}

/// Decode one validated TCF1 packet into ticks and publish them; count
/// the packet, its gap and any dropped records. Shared by every TCF1 source.
///
/// Consecutive records for the same instrument and `seq` (a tick record
/// and its depth record) are one update: merged first, published once.
pub fn publish_packet(ctx: &mut FeedCtx, merger: &mut tcf1::Merger, seqs: &mut PacketSeq, bytes: &[u8], recv_ns: u64) {
    let h = &ctx.health;
    h.packets.fetch_add(1, Ordering::Relaxed);
    let p = match tcf1::parse(bytes) {
        Ok(p) => p,
        Err(why) => return h.dropped(why),
    };
    let gap = seqs.observe(p.packet_seq);
    if gap > 0 {
        h.packet_gaps.fetch_add(gap, Ordering::Relaxed);
    }
    let mut n = 0;
    // (token, seq, slot) merged but not yet published.
    let mut pending: Option<(u32, u64, u32)> = None;
    for rec in p.records() {
        let (tcf1::Record::Tick(r) | tcf1::Record::Depth(r)) = &rec;
        if let Some((token, seq, slot)) = pending {
            if (token, seq) != (r.token, r.seq) {
                n += u64::from(ctx.fanout.publish(merger.current(slot)));
                pending = None;
            }
        }
        match merger.apply(&ctx.registry, &rec, recv_ns) {
            Ok(t) => pending = Some((t.token, t.seq, t.slot)),
            Err(why) => h.dropped(why),
        }
    }
    if let Some((_, _, slot)) = pending {
        n += u64::from(ctx.fanout.publish(merger.current(slot)));
    }
    if n > 0 {
        h.published(n, recv_ns);
    }
}

/// Read a non-blocking stream until WouldBlock (edge-triggered readiness
/// reports nothing again until new data arrives), handing `buf` to
/// `consume` after every read so it stays bounded by one unit (a packet, a
/// line). `consume` removes what it used and returns false to drop the
/// peer. Returns whether the peer is still there.
pub fn read_stream(
    stream: &mut impl std::io::Read,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    mut consume: impl FnMut(&mut Vec<u8>) -> bool,
) -> bool {
    loop {
        match stream.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if !consume(buf) {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Marks a feed `down` when dropped: held by the feed's thread, so a source
/// that returns or panics never keeps looking live in `/status`.
pub struct DownOnExit(pub Arc<FeedHealth>);

impl Drop for DownOnExit {
    fn drop(&mut self) {
        self.0.state.store(STATE_DOWN, Ordering::Relaxed);
        if std::thread::panicking() {
            log::error!("feed {} stopped after a panic", self.0.name);
        }
    }
}

/// Boxed-source conversion for [`Source::polled`]'s default (a method
/// with a body cannot turn `Box<Self>` into `Box<dyn Source>` itself).
pub trait IntoSource {
    /// `self` as a trait object.
    fn into_source(self: Box<Self>) -> Box<dyn Source>;
}

impl<T: Source> IntoSource for T {
    fn into_source(self: Box<Self>) -> Box<dyn Source> {
        self
    }
}

/// A feed source, run on its own thread until shutdown.
pub trait Source: IntoSource + Send + 'static {
    /// Kind name for health reports.
    fn kind(&self) -> &'static str;
    /// Address for health reports (empty when there is none).
    fn address(&self) -> String {
        String::new()
    }
    /// Does this source publish named channels (and so need channel rings)?
    fn publishes_channels(&self) -> bool {
        false
    }
    /// Run until `ctx.shutdown` is set.
    fn run(self: Box<Self>, ctx: FeedCtx);
    /// This source as one a worker polls, if it can be (else itself back).
    ///
    /// # Errors
    /// The source back, when it needs a thread of its own.
    fn polled(self: Box<Self>) -> Result<Box<dyn Polled>, Box<dyn Source>> {
        Err(self.into_source())
    }
}

/// A source read inside a worker's event loop: registered on the worker's
/// `Poll`, read when it reports readiness.
pub trait Polled: Send {
    /// Register the source's socket (readable, edge-triggered) as `token`.
    ///
    /// # Errors
    /// epoll registration failed.
    fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()>;
    /// Read and publish at most `budget` packets, then flush. Returns true
    /// when the budget ran out first: more may be waiting, and edge-
    /// triggered readiness will not report it again, so call again soon.
    ///
    /// # Errors
    /// The socket failed (the source is down).
    fn read_ready(&mut self, ctx: &mut FeedCtx, budget: usize) -> std::io::Result<bool>;
}

/// Build (bind, open) the sources for `specs`. Simulators split the
/// master between them (slot `i` belongs to simulator `i % n`), so two
/// simulators never produce competing `seq` streams for one instrument.
///
/// # Errors
/// A source that cannot bind its address or open its file.
pub fn build(specs: &[FeedSpec], registry: &Registry) -> anyhow::Result<Vec<Box<dyn Source>>> {
    let sims = specs.iter().filter(|s| matches!(s, FeedSpec::Sim { .. })).count();
    let mut sim_index = 0;
    specs
        .iter()
        .map(|spec| {
            Ok(match spec {
                FeedSpec::Sim { rate, seed } => {
                    let seed = seed.map_or_else(|| fastrand::u64(..), |s| s.wrapping_add(sim_index as u64));
                    let s = sim::Sim::new(registry, *rate, sim_index, sims, seed);
                    sim_index += 1;
                    Box::new(s) as Box<dyn Source>
                }
                FeedSpec::Udp { addr, iface } => Box::new(udp::Udp::bind(*addr, *iface, registry)?),
                FeedSpec::Tcp { addr } => Box::new(tcp::Tcp::bind(*addr, registry)?),
                FeedSpec::Replay { path, speed } => Box::new(replay::Replay::open(path.clone(), *speed, registry)?),
                FeedSpec::Redis { url } => Box::new(redis::RedisFeed::new(url.clone(), registry)),
                FeedSpec::Kite(k) => Box::new(kite::KiteFeed::new(k.clone(), registry)?),
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn judge(now_ns: u64, market_open: bool) -> Judge {
        Judge { now_ns, market_open, stale_after_ns: 5 * S }
    }

    #[test]
    fn a_live_source_that_delivered_nothing_or_long_ago_is_stale_while_open() {
        let f = FeedHealth::new("udp".into(), "udp", String::new());
        f.state.store(STATE_LIVE, Ordering::Relaxed);
        let t = 1_000 * S;
        assert_eq!(f.state_name(&judge(t, true)), "stale", "nothing yet");
        assert_eq!(f.why(&judge(t, true)), "stale (nothing delivered yet; limit 5 s)");
        assert_eq!(f.state_name(&judge(t, false)), "paused", "quiet while closed");
        f.published(1, t);
        assert_eq!(f.state_name(&judge(t + 5 * S, true)), "live", "at the limit");
        assert_eq!(f.state_name(&judge(t + 5 * S + 1, true)), "stale");
        assert_eq!(f.why(&judge(t + 7 * S, true)), "stale (nothing delivered for 7.0 s; limit 5 s)");
        f.state.store(STATE_PAUSED, Ordering::Relaxed);
        assert_eq!(f.state_name(&judge(t + 7 * S, true)), "paused", "the simulator says so itself");
        f.state.store(STATE_CONNECTING, Ordering::Relaxed);
        assert_eq!(f.why(&judge(t, true)), "connecting (not up yet)");
    }

    #[test]
    fn a_demand_following_source_is_judged_only_while_something_is_wanted() {
        let f = FeedHealth::new("kite".into(), "kite", String::new());
        f.state.store(STATE_LIVE, Ordering::Relaxed);
        let t = 1_000 * S;
        assert_eq!(f.state_name(&judge(t, true)), "live", "nothing asked, nothing due");
        f.wanted(3, t);
        assert_eq!(f.state_name(&judge(t + 5 * S, true)), "live", "the upstream gets the limit to answer");
        assert_eq!(f.state_name(&judge(t + 6 * S, true)), "stale", "it never did");
        f.published(1, t + 6 * S);
        f.wanted(4, t + 6 * S);
        assert_eq!(f.state_name(&judge(t + 10 * S, true)), "live");
        assert_eq!(f.state_name(&judge(t + 12 * S, true)), "stale", "more wanted does not restart the count");
        f.resubscribed(t + 12 * S);
        assert_eq!(f.state_name(&judge(t + 13 * S, true)), "live", "a reopened link asked again just now");
        f.wanted(0, t + 20 * S);
        assert_eq!(f.state_name(&judge(t + 60 * S, true)), "live", "nothing wanted any more");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let d0 = backoff(0, min, max);
        assert!(d0 >= min.mul_f64(0.75) && d0 <= min.mul_f64(1.25));
        for a in [8, 20, 100] {
            let d = backoff(a, min, max);
            assert!(d <= max.mul_f64(1.25) && d >= max.mul_f64(0.75), "{a}: {d:?}");
        }
        let spread: std::collections::HashSet<u128> = (0..20).map(|_| backoff(3, min, max).as_micros()).collect();
        assert!(spread.len() > 1, "jittered");
    }
}
