//! A worker: one pinned thread, one `mio::Poll`, its own `SO_REUSEPORT`
//! listener, its connections, its subscription table, its histogram.
//!
//! One turn (an Aeron-style agent duty cycle, `Worker::do_work`):
//! socket events → client requests → drain rings → fan out (encode once per
//! tick and encoding, append to every subscriber) → timers → one `writev`
//! per dirty connection → record latency. The idle strategy decides what
//! happens when a turn found nothing to do. With `--feed-poll worker` the
//! first step also reads the worker's UDP feeds, so a tick goes from socket
//! to subscribers in one turn of one thread.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the thread: setup, the duty cycle, idling, metrics, shutdown |
//! | `sockets.rs` | accept, read, write, close, drop |
//! | `upgrade.rs` | the HTTP request, the upgrade, WebSocket messages → dialect |
//! | `host.rs` | the worker as a dialect's `Host` |
//! | `subscriptions.rs` | instruments, watch-all, channels, interest bits |
//! | `fanout.rs` | the hot path and the slow-consumer policy |
//! | `timers.rs` | rate caps, market notices, housekeeping |
//! | `conn.rs` | one connection: socket, lanes, state |
//!
//! A worker also measures itself, with the clock reads its turns already
//! make: delivery latency per tick (an HDR histogram and the Prometheus
//! buckets, plain memory, published twice a second) and busy time (turns
//! that found work, start to next start).
//!
//! Never on the per-tick, per-client path: allocation (buffers reuse their
//! capacity), locks, hashing, string work. A slow or broken client only
//! ever costs its own buffers.

pub mod conn;
mod fanout;
mod host;
mod sockets;
mod subscriptions;
mod timers;
mod upgrade;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpListener;
use mio::{Events, Interest as Ready, Poll, Token};

use crate::channel::ChannelMsg;
use crate::config::{Idle, SlowConsumer};
use crate::dialect::{ChanKind, Dialect};
use crate::encode::FrameCache;
use crate::feed::{DownOnExit, FeedCtx, Polled, STATE_DOWN, STATE_LIVE};
use crate::metrics::{new_histogram, Counters, LatencyBuckets};
use crate::ring::WorkerSignal;
use crate::shared::Shared;
use crate::subs::{ConnId, Delivery, SubTable};
use crate::tick::{now_ns, Tick};
use crate::ws::close;
use conn::{Conn, Phase};

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
/// Token of the first dialect port (`--openalgo-listen`, `--kite-listen`);
/// port `i` is `FIRST_PORT - i`.
const FIRST_PORT: usize = usize::MAX - 3;
/// Most dialect ports.
const MAX_PORTS: usize = 4;
/// Token of the first feed this worker polls; feed `i` is `FIRST_FEED - i`.
const FIRST_FEED: usize = FIRST_PORT - MAX_PORTS;
/// Packets a polled feed reads per turn, at most: 16 full datagrams are
/// ≤ 8176 ticks, within one turn's `DRAIN_LIMIT`, so the worker drains each
/// turn what it read. Smaller rings get a smaller budget (`feed_budget`).
const FEED_BUDGET: usize = 16;
/// Ticks in the largest TCF1 datagram.
const TICKS_PER_DATAGRAM: usize = (65_536 - crate::feed::tcf1::HEADER_LEN) / crate::feed::tcf1::TICK_LEN;

/// Ticks taken from one ring per turn before moving on (bounds a turn).
const DRAIN_LIMIT: usize = 8192;
/// Bytes read from one connection per turn before serving others.
const READ_BUDGET: usize = 256 * 1024;
/// Read buffer shared by all of a worker's connections.
const READ_CHUNK: usize = 64 * 1024;
/// How often idle connections are checked (heartbeats, handshake timeouts).
const HOUSEKEEPING_NS: u64 = 100_000_000;
/// How often the local histogram is merged into the shared one.
const PUBLISH_NS: u64 = 500_000_000;
/// A connection that has not finished its HTTP request by then is closed.
const HANDSHAKE_TIMEOUT_NS: u64 = 10_000_000_000;
/// `--idle hybrid`: how long a worker keeps polling after its last work
/// before it parks. Longer than the gap between packets of a steady feed
/// (a 100k ticks/s feed sends every ~10–60 µs), so such a feed never has to
/// wake the worker; short enough that a quiet server idles.
const HYBRID_SPIN_NS: u64 = 200_000;
/// Longest a parked worker sleeps without a timer due.
const MAX_PARK_NS: u64 = 100_000_000;

pub(crate) use crate::ws::message::CloseReason;

/// Everything one worker thread owns. Its methods live with their job:
/// `sockets` (accept, read, write, drop), `upgrade` (the HTTP request and
/// WebSocket messages), `subscriptions`, `fanout` (the hot path) and
/// `timers`; the duty cycle that calls them is here.
pub struct Worker {
    /// Index among workers: its bit in the interest sets, its gauges.
    id: usize,
    /// What every thread shares (registry, config, hub, counters, …).
    shared: Arc<Shared>,
    /// This thread's epoll.
    poll: Poll,
    /// Its `SO_REUSEPORT` share of the main port.
    listener: TcpListener,
    /// Its share of each dialect's own port, with that dialect.
    ports: Vec<(Dialect, TcpListener)>,
    /// Listeners whose `accept` failed (EMFILE and friends) with
    /// connections left in the backlog, which no new readiness event will
    /// report: bit 0 the main port, bit `i + 1` port `i`. Retried when a
    /// connection closes and at every housekeeping pass.
    accept_stalled: u8,
    /// A connection closed since the last retry of a stalled accept.
    fd_freed: bool,
    /// How feeds wake it when it parks (see `ring`).
    signal: Arc<WorkerSignal>,
    /// Tick rings, one per feed thread (SPSC: that feed → this worker).
    rings: Vec<rtrb::Consumer<Tick>>,
    /// Channel-message rings, one per channel publisher.
    chan_rings: Vec<rtrb::Consumer<ChannelMsg>>,
    /// Feeds read in this loop (`--feed-poll worker`).
    feeds: Vec<PolledFeed>,
    /// Subscribers per channel id (grown as channels appear).
    chan_subs: Vec<smallvec::SmallVec<[ChanSub; 2]>>,
    /// Connections that receive every instrument (a Trading WS client
    /// before its first subscribe, as the seed's MVP does).
    all_instruments: Vec<ConnId>,
    /// This pass's native heartbeat (built once per housekeeping pass).
    heartbeat: Option<(u64, Vec<u8>)>,
    /// Connections by id (the mio token); `None`: a free id.
    conns: Vec<Option<Conn>>,
    /// Free ids, reused before the table grows.
    free: Vec<u32>,
    /// Subscribers per instrument slot (token-indexed, no hashing).
    subs: SubTable,
    /// This tick's frames, one per encoding (encode once, write to all).
    cache: FrameCache,
    /// Scratch for per-client frames (snapshots, conflated values).
    scratch: Vec<u8>,
    /// Read buffer shared by all of its connections.
    rbuf: Box<[u8]>,
    /// Connections with something queued this turn (each once).
    dirty: Vec<ConnId>,
    /// Connections that stopped reading at `READ_BUDGET` (edge-triggered
    /// epoll will not report them again): read next turn.
    reread: Vec<ConnId>,
    /// Rate-capped subscriptions waiting for their interval: (due ns, conn, slot).
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Source timestamps of ticks delivered this turn (latency, recorded
    /// after the flush).
    batch_ts: Vec<u64>,
    /// Tick-to-write latency since the last publish (`/status`).
    hist: Histogram<u64>,
    /// The same in Prometheus buckets (`/metrics`).
    buckets: LatencyBuckets,
    /// Time spent in turns that found work, ns since start.
    busy_ns: u64,
    /// Delivery of a subscription that asks for none (`--slow-consumer`).
    default_delivery: Delivery,
    /// When the housekeeping pass is next due.
    next_housekeeping_ns: u64,
    /// When counters and the histogram are next merged into `shared`.
    next_publish_ns: u64,
    /// Market state last announced to this worker's clients.
    market_open: bool,
    /// Data frames queued since the last publish.
    frames: u64,
    /// Bytes and write calls since the last publish.
    written: conn::Written,
    /// Connections held (any phase).
    open: u64,
    /// Generation of the next accepted connection.
    next_gen: u64,
    /// To the `http` thread.
    http_jobs: crossbeam_channel::Sender<crate::http::Job>,
    /// From the `http` thread.
    http_replies: crossbeam_channel::Receiver<crate::http::Reply>,
}

/// Everything needed to start a worker thread.
pub struct WorkerSetup {
    /// Worker index (interest bit).
    pub id: usize,
    /// Its poll (the signal's waker is registered on it).
    pub poll: Poll,
    /// Its listener.
    pub listener: std::net::TcpListener,
    /// Its share of each dialect port that is on (OpenAlgo, Kite).
    pub ports: Vec<(Dialect, std::net::TcpListener)>,
    /// Its wake signal.
    pub signal: Arc<WorkerSignal>,
    /// Its ring ends, one per feed.
    pub rings: Vec<rtrb::Consumer<Tick>>,
    /// Its channel ring ends, one per channel publisher.
    pub chan_rings: Vec<rtrb::Consumer<ChannelMsg>>,
    /// Feeds this worker reads in its own loop.
    pub feeds: Vec<(Box<dyn Polled>, FeedCtx)>,
    /// Plain HTTP requests go to the `http` thread here…
    pub http_jobs: crossbeam_channel::Sender<crate::http::Job>,
    /// …and their answers come back here.
    pub http_replies: crossbeam_channel::Receiver<crate::http::Reply>,
}

/// Datagrams a polled feed may read per turn: `FEED_BUDGET`, or fewer so
/// that one turn's reading fills at most half of a small ring.
fn feed_budget(ring_capacity: usize) -> usize {
    (ring_capacity / 2 / TICKS_PER_DATAGRAM).clamp(1, FEED_BUDGET)
}

/// A feed read inside the worker's loop.
struct PolledFeed {
    /// `None` once its socket failed (dropping it leaves the epoll set).
    source: Option<Box<dyn Polled>>,
    ctx: FeedCtx,
    /// To be read this turn: it reported readiness, or its last read
    /// stopped at the budget (edge-triggered epoll will not report it again).
    ready: bool,
    /// Marks the feed down when the worker exits.
    _down: DownOnExit,
}

/// One connection's subscription to a named channel.
#[derive(Clone, Copy, Debug)]
struct ChanSub {
    conn: ConnId,
    kind: ChanKind,
    /// Highest `seq` delivered (or the channel's seq at subscribe time): a
    /// later message past `last_seq + 1` means messages were lost (a
    /// congested client, a ring overrun) and the client gets a `gap`.
    last_seq: u64,
}

impl Worker {
    /// Build a worker; registers its listener.
    ///
    /// # Errors
    /// Registration with epoll failed.
    pub fn new(setup: WorkerSetup, shared: Arc<Shared>) -> io::Result<Worker> {
        let mut listener = TcpListener::from_std(setup.listener);
        setup.poll.registry().register(&mut listener, LISTENER, Ready::READABLE)?;
        assert!(setup.ports.len() <= MAX_PORTS, "at most {MAX_PORTS} dialect ports");
        let mut ports = Vec::with_capacity(setup.ports.len());
        for (i, (dialect, l)) in setup.ports.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            setup.poll.registry().register(&mut l, Token(FIRST_PORT - i), Ready::READABLE)?;
            ports.push((dialect, l));
        }
        let mut feeds = Vec::with_capacity(setup.feeds.len());
        for (i, (mut source, ctx)) in setup.feeds.into_iter().enumerate() {
            source.register(setup.poll.registry(), Token(FIRST_FEED - i))?;
            ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
            feeds.push(PolledFeed { source: Some(source), _down: DownOnExit(ctx.health.clone()), ctx, ready: true });
        }
        let slots = shared.registry.len();
        let default_delivery = match shared.config.slow_consumer {
            SlowConsumer::Conflate => Delivery::Conflate,
            SlowConsumer::Disconnect => Delivery::Lossless,
        };
        Ok(Worker {
            id: setup.id,
            poll: setup.poll,
            listener,
            ports,
            accept_stalled: 0,
            fd_freed: false,
            signal: setup.signal,
            rings: setup.rings,
            chan_rings: setup.chan_rings,
            feeds,
            chan_subs: Vec::new(),
            all_instruments: Vec::new(),
            heartbeat: None,
            conns: Vec::new(),
            free: Vec::new(),
            subs: SubTable::new(slots),
            cache: FrameCache::default(),
            scratch: Vec::with_capacity(4096),
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            dirty: Vec::new(),
            reread: Vec::new(),
            timers: BinaryHeap::new(),
            batch_ts: Vec::with_capacity(DRAIN_LIMIT),
            hist: new_histogram(),
            buckets: LatencyBuckets::default(),
            busy_ns: 0,
            default_delivery,
            next_housekeeping_ns: 0,
            next_publish_ns: 0,
            market_open: shared.market_open.load(Ordering::Acquire),
            frames: 0,
            written: Default::default(),
            open: 0,
            next_gen: 0,
            http_jobs: setup.http_jobs,
            http_replies: setup.http_replies,
            shared,
        })
    }

    /// Run until shutdown, then close every client with 1001.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let idle = self.shared.config.idle;
        let mut now = now_ns();
        let mut last_work_ns = now;
        let mut work = 1;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            if work > 0 {
                last_work_ns = now;
            }
            let hot = match idle {
                Idle::Park => false,
                Idle::Spin => true,
                Idle::Hybrid => now.saturating_sub(last_work_ns) < HYBRID_SPIN_NS,
            };
            let timeout =
                if hot || work > 0 || !self.reread.is_empty() { Some(Duration::ZERO) } else { self.park_timeout(now) };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    break;
                }
            }
            self.signal.sleeping.store(false, Ordering::Relaxed);
            // Busy time, from the clock read each turn already makes: a
            // turn that found work, from its start to this one's (its poll
            // did not wait: a turn after work polls with a zero timeout).
            let turn = now_ns();
            if work > 0 {
                self.busy_ns += turn.saturating_sub(now);
            }
            now = turn;
            work = self.do_work(&events, now);
        }
        self.shutdown();
    }

    /// Decide how long to park: announce sleep, re-check the rings (see the
    /// wake protocol in `ring`), and sleep until the next timer at most
    /// (`now`: the last turn's clock; the sleep errs long by that turn's
    /// few microseconds).
    fn park_timeout(&mut self, now: u64) -> Option<Duration> {
        if !self
            .signal
            .may_park(|| self.rings.iter().any(|r| !r.is_empty()) || self.chan_rings.iter().any(|r| !r.is_empty()))
        {
            return Some(Duration::ZERO);
        }
        let mut due = self.next_housekeeping_ns.min(now + MAX_PARK_NS);
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            due = due.min(*t);
        }
        Some(Duration::from_nanos(due.saturating_sub(now)))
    }

    /// One duty cycle at `now` (the turn's one clock read; a turn that
    /// delivered ticks reads it once more after its writes, for latency).
    /// Returns how much work it found: events, answers, feed reads, ticks
    /// and channel messages; 0 lets the idle strategy park.
    fn do_work(&mut self, events: &Events, now: u64) -> usize {
        let mut work = 0;
        for ev in events.iter() {
            work += 1;
            match ev.token() {
                WAKER => {}
                LISTENER => self.accept(now, None),
                Token(t) if t <= FIRST_PORT && FIRST_PORT - t < self.ports.len() => {
                    self.accept(now, Some(FIRST_PORT - t))
                }
                Token(t) if t <= FIRST_FEED && FIRST_FEED - t < self.feeds.len() => {
                    self.feeds[FIRST_FEED - t].ready = true
                }
                Token(t) => {
                    let id = ConnId(t as u32);
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.on_readable(id, now);
                    }
                    if ev.is_writable() {
                        self.on_writable(id, now);
                    }
                }
            }
        }
        for id in std::mem::take(&mut self.reread) {
            work += 1;
            self.on_readable(id, now);
        }
        while let Ok(((id, gen), bytes)) = self.http_replies.try_recv() {
            work += 1;
            if let Some(c) = self.conn(id).filter(|c| c.gen == gen && c.awaiting_http) {
                c.awaiting_http = false;
                c.ctrl_raw(&bytes);
                self.mark_dirty(id);
            }
        }
        for i in 0..self.feeds.len() {
            if self.feeds[i].ready {
                self.read_feed(i);
                work += 1;
            }
        }
        work += self.drain(now);
        work += self.drain_channels(now);
        if self.signal.overrun.swap(false, Ordering::Acquire) {
            self.resync(now);
        }
        // After the drain: a tick published after the market opened is
        // ordered after the flag (Release/Acquire through the feed and the
        // ring), so the notice goes out in this turn's flush, on the control
        // lane, ahead of that tick.
        if self.shared.market_open.load(Ordering::Acquire) != self.market_open {
            self.announce_market(now);
        }
        if self.timers.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
            self.fire_timers(now);
        }
        if self.accept_stalled != 0 && std::mem::take(&mut self.fd_freed) {
            self.retry_accepts(now);
        }
        if now >= self.next_housekeeping_ns {
            self.retry_accepts(now);
            self.housekeeping(now);
            self.next_housekeeping_ns = now + HOUSEKEEPING_NS;
        }
        self.flush_dirty(now);
        if !self.batch_ts.is_empty() {
            let done = now_ns();
            for &ts in &self.batch_ts {
                let ns = done.saturating_sub(ts).max(1);
                self.hist.saturating_record(ns);
                self.buckets.record(ns);
            }
            self.batch_ts.clear();
        }
        if now >= self.next_publish_ns {
            self.publish_metrics(now);
            self.next_publish_ns = now + PUBLISH_NS;
        }
        work
    }

    /// Read a polled feed's waiting packets into the rings (this worker's
    /// own included, drained later in the same turn). A failed socket marks
    /// the feed down, as a feed thread's exit would.
    fn read_feed(&mut self, i: usize) {
        let f = &mut self.feeds[i];
        let Some(source) = f.source.as_mut() else { return };
        let budget = feed_budget(self.shared.config.ring_capacity);
        f.ready = match source.read_ready(&mut f.ctx, budget) {
            Ok(more) => more,
            Err(e) => {
                log::error!("feed {}: {e}", f.ctx.health.name);
                f.ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
                f.source = None;
                false
            }
        };
    }

    fn publish_metrics(&mut self, now: u64) {
        let g = &self.shared.gauges[self.id];
        g.connections.store(self.open, Ordering::Relaxed);
        g.subscriptions.store(self.subs.len() as u64, Ordering::Relaxed);
        g.busy_ns.store(self.busy_ns, Ordering::Relaxed);
        if !self.hist.is_empty() {
            g.latency.lock().add(&self.hist, now);
            self.hist.reset();
            self.buckets.publish(g);
        }
        let c = &self.shared.counters;
        Counters::add(&c.frames_sent, std::mem::take(&mut self.frames));
        let written = std::mem::take(&mut self.written);
        Counters::add(&c.bytes_written, written.bytes);
        Counters::add(&c.write_calls, written.calls);
    }

    /// Close 1001 to every client, give them up to a second to drain, then
    /// drop what is left (saving resumable sessions for `--state-file`), exit.
    fn shutdown(&mut self) {
        let now = now_ns();
        // With a state file this stop is a restart the client can ride out.
        let reason = if self.shared.config.state_file.is_some() {
            "server restarting: reconnect with your client_id"
        } else {
            "server shutting down"
        };
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            match self.conns[i].as_mut().map(|c| c.phase) {
                Some(Phase::Open) => {
                    self.conns[i].as_mut().expect("matched").close(close::GOING_AWAY, reason);
                    self.write(id, now);
                }
                Some(_) => self.drop_conn(id),
                None => {}
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut events = Events::with_capacity(256);
        while self.open > 0 && std::time::Instant::now() < deadline {
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
            for ev in events.iter() {
                let Token(t) = ev.token();
                if t < self.conns.len() {
                    self.write(ConnId(t as u32), now);
                }
            }
        }
        for i in 0..self.conns.len() {
            self.drop_conn(ConnId(i as u32));
        }
        self.publish_metrics(now_ns());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_budget_fits_half_the_ring_and_at_most_sixteen_datagrams() {
        assert_eq!(TICKS_PER_DATAGRAM, 511);
        assert_eq!(feed_budget(65_536), FEED_BUDGET);
        assert_eq!(feed_budget(4 * 511 * 2), 4);
        assert_eq!(feed_budget(1024), 1, "a small ring still reads one datagram a turn");
        assert_eq!(feed_budget(1), 1);
    }
}
