//! A worker: one pinned thread, one `mio::Poll`, its own `SO_REUSEPORT`
//! listener, its connections, its subscription table, its histogram.
//!
//! One turn (an Aeron-style agent duty cycle):
//! socket events → client requests → drain rings → fan out (encode once per
//! tick and encoding, append to every subscriber) → timers → one `writev`
//! per dirty connection → record latency. The idle strategy decides what
//! happens when a turn found nothing to do. With `--feed-poll worker` the
//! first step also reads the worker's UDP feeds, so a tick goes from socket
//! to subscribers in one turn of one thread.
//!
//! Never on the per-tick, per-client path: allocation (buffers reuse their
//! capacity), locks, hashing, string work. A slow or broken client only
//! ever costs its own buffers.

pub mod conn;
mod host;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest as Ready, Poll, Token};

use crate::channel::{ChannelId, ChannelMsg};
use crate::config::{Idle, SlowConsumer};
use crate::encode::{self, Encoding, FrameCache, Marks};
use crate::feed::{DownOnExit, FeedCtx, Polled, STATE_DOWN, STATE_LIVE};
use crate::instrument::Slot;
use crate::metrics::{new_histogram, Counters};
use crate::ring::WorkerSignal;
use crate::shared::Shared;
use crate::subs::{Added, ConnId, Delivery, SubTable};
use crate::tick::{now_ns, Tick};
use crate::ws::{close, frame, handshake, message};
use crate::dialect::{self, native, ChanKind, Dialect, Protocol};
use conn::{Conn, Phase};
use host::Ctx;

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const OPENALGO_LISTENER: Token = Token(usize::MAX - 3);
/// Token of the first feed this worker polls; feed `i` is `FIRST_FEED - i`.
const FIRST_FEED: usize = usize::MAX - 4;
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

/// Everything one worker thread owns.
pub struct Worker {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    listener: TcpListener,
    /// This worker's share of the OpenAlgo port.
    openalgo: Option<TcpListener>,
    signal: Arc<WorkerSignal>,
    rings: Vec<rtrb::Consumer<Tick>>,
    chan_rings: Vec<rtrb::Consumer<ChannelMsg>>,
    /// Feeds read in this loop (`--feed-poll worker`).
    feeds: Vec<PolledFeed>,
    /// Subscribers per channel id (grown as channels appear).
    chan_subs: Vec<smallvec::SmallVec<[ChanSub; 2]>>,
    /// Connections that receive every instrument (a Trading WS client
    /// before its first subscribe, as the seed's MVP does).
    pub(crate) all_instruments: Vec<ConnId>,
    /// This turn's native heartbeat (built once per housekeeping pass).
    heartbeat: Option<(u64, Vec<u8>)>,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    subs: SubTable,
    cache: FrameCache,
    /// Scratch for per-client frames and control replies.
    scratch: Vec<u8>,
    rbuf: Box<[u8]>,
    dirty: Vec<ConnId>,
    reread: Vec<ConnId>,
    /// Rate-capped subscriptions waiting for their interval: (due ns, conn, slot).
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Source timestamps of ticks delivered this turn.
    batch_ts: Vec<u64>,
    hist: Histogram<u64>,
    default_delivery: Delivery,
    next_housekeeping_ns: u64,
    next_publish_ns: u64,
    /// Market state last announced to this worker's clients.
    market_open: bool,
    frames: u64,
    bytes: u64,
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
    /// Its OpenAlgo listener, if that port is on.
    pub openalgo: Option<std::net::TcpListener>,
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
        let mut openalgo = setup.openalgo.map(TcpListener::from_std);
        if let Some(l) = openalgo.as_mut() {
            setup.poll.registry().register(l, OPENALGO_LISTENER, Ready::READABLE)?;
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
            openalgo,
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
            default_delivery,
            next_housekeeping_ns: 0,
            next_publish_ns: 0,
            market_open: shared.market_open.load(Ordering::Acquire),
            frames: 0,
            bytes: 0,
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
        let mut busy = true;
        let mut last_work_ns = 0;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            let hot = match idle {
                Idle::Park => false,
                Idle::Spin => true,
                Idle::Hybrid => {
                    let now = now_ns();
                    if busy {
                        last_work_ns = now;
                    }
                    now.saturating_sub(last_work_ns) < HYBRID_SPIN_NS
                }
            };
            let timeout =
                if hot || busy || !self.reread.is_empty() { Some(Duration::ZERO) } else { self.park_timeout() };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.id);
                    break;
                }
            }
            self.signal.sleeping.store(false, Ordering::Relaxed);
            busy = self.turn(&events);
        }
        self.shutdown();
    }

    /// Decide how long to park: announce sleep, re-check the rings (see the
    /// wake protocol in `ring`), and sleep until the next timer at most.
    fn park_timeout(&mut self) -> Option<Duration> {
        self.signal.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.rings.iter().any(|r| !r.is_empty()) || self.chan_rings.iter().any(|r| !r.is_empty()) {
            self.signal.sleeping.store(false, Ordering::Relaxed);
            return Some(Duration::ZERO);
        }
        let now = now_ns();
        let mut due = self.next_housekeeping_ns.min(now + MAX_PARK_NS);
        if let Some(Reverse((t, _, _))) = self.timers.peek() {
            due = due.min(*t);
        }
        Some(Duration::from_nanos(due.saturating_sub(now)))
    }

    /// One duty cycle. Returns true if it did any work.
    fn turn(&mut self, events: &Events) -> bool {
        let now = now_ns();
        let mut work = !events.is_empty();
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                LISTENER => self.accept(now, Dialect::Native),
                OPENALGO_LISTENER => self.accept(now, Dialect::OpenAlgo),
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
            self.on_readable(id, now);
        }
        while let Ok(((id, gen), bytes)) = self.http_replies.try_recv() {
            work = true;
            if let Some(c) = self.conn(id).filter(|c| c.gen == gen && c.awaiting_http) {
                c.awaiting_http = false;
                c.ctrl_raw(&bytes);
                self.mark_dirty(id);
            }
        }
        for i in 0..self.feeds.len() {
            if self.feeds[i].ready {
                self.read_feed(i);
                work = true;
            }
        }
        work |= self.drain(now) > 0;
        work |= self.drain_channels(now) > 0;
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
        if now >= self.next_housekeeping_ns {
            self.housekeeping(now);
            self.next_housekeeping_ns = now + HOUSEKEEPING_NS;
        }
        self.flush_dirty(now);
        if !self.batch_ts.is_empty() {
            let done = now_ns();
            for &ts in &self.batch_ts {
                self.hist.saturating_record(done.saturating_sub(ts).max(1));
            }
            self.batch_ts.clear();
        }
        if now >= self.next_publish_ns {
            self.publish_metrics();
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

    // ── connections ────────────────────────────────────────────────────

    /// Accept what is waiting; `dialect` is the listener's (the main port
    /// decides per path at the upgrade, the OpenAlgo port is OpenAlgo).
    fn accept(&mut self, now: u64, dialect: Dialect) {
        loop {
            let listener = match dialect {
                Dialect::OpenAlgo => self.openalgo.as_ref().expect("registered only when bound"),
                _ => &self.listener,
            };
            match listener.accept() {
                Ok((sock, _)) => self.admit(sock, now, dialect),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog.
                    log::warn!("worker {}: accept failed: {e}", self.id);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut sock: TcpStream, now: u64, dialect: Dialect) {
        let c = &self.shared.counters;
        let max = self.shared.config.max_connections as u64;
        if self.shared.open_connections.fetch_add(1, Ordering::Relaxed) >= max {
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            Counters::inc(&c.connections_rejected);
            let body = format!("connection limit reached ({max}); try again later\n");
            // Best effort: the socket is fresh, so a short response fits its buffer.
            let _ = io::Write::write(&mut sock, &handshake::http_response(503, "text/plain", body.as_bytes()));
            return;
        }
        Counters::inc(&c.connections_total);
        let _ = sock.set_nodelay(true);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        if let Err(e) = self.poll.registry().register(&mut sock, Token(id as usize), Ready::READABLE | Ready::WRITABLE)
        {
            log::warn!("worker {}: register failed: {e}", self.id);
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            self.free.push(id);
            return;
        }
        self.next_gen += 1;
        let mut c = Conn::new(sock, now, self.next_gen);
        c.dialect = dialect;
        self.conns[id as usize] = Some(c);
        self.open += 1;
    }

    #[inline]
    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Drop a connection now: unsubscribe everything, save its session.
    fn drop_conn(&mut self, id: ConnId) {
        let Some(mut c) = self.conns.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        if c.upgraded {
            self.shared.dialect_connections[c.dialect as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(u) = &c.user {
            u.disconnect();
            u.unsubscribed(c.slots.len() + c.channels.len());
        }
        let mut saved = Vec::with_capacity(c.slots.len());
        for &slot in &c.slots {
            if let Some(s) = self.subs.get(slot, id) {
                let token = self.shared.registry.get(slot).token;
                saved.push(crate::session::SavedSub { token, mode: s.enc.mode, delivery: s.delivery });
            }
            if self.subs.unsubscribe(slot, id) == Some(true) && self.all_instruments.is_empty() {
                self.shared.hub.interest.clear(slot, self.id);
            }
        }
        self.leave_all_instruments(id);
        for &ch in &c.channels {
            self.remove_channel_sub(id, ch);
        }
        if !c.client_id.is_empty() {
            self.shared.sessions.save(&c.session_key(), saved, std::time::Instant::now());
        }
        self.subs.forget_conn(id);
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.free.push(id.0);
        self.open -= 1;
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queue a close frame (or drop outright before the upgrade) and count why.
    pub(crate) fn close_conn(&mut self, id: ConnId, why: CloseReason) {
        let counters = &self.shared.counters;
        match why.code {
            close::PROTOCOL | close::INVALID_DATA => Counters::inc(&counters.protocol_errors),
            close::TOO_BIG => Counters::inc(&counters.oversized),
            close::POLICY => Counters::inc(&counters.policy_closes),
            close::TRY_AGAIN_LATER => Counters::inc(&counters.slow_disconnects),
            _ => {}
        }
        let Some(c) = self.conn(id) else { return };
        if c.phase == Phase::Open {
            log::info!("closing client {} with {}: {}", c.client_id, why.code, why.reason);
            c.close(why.code, why.reason);
            self.mark_dirty(id);
        } else {
            self.drop_conn(id);
        }
    }

    fn on_readable(&mut self, id: ConnId, now: u64) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else {
                return;
            };
            match c.sock.read(&mut self.rbuf) {
                Ok(0) => {
                    // Peer closed (or half-closed): nothing more will come.
                    // Give queued replies (an HTTP answer) one try first.
                    let mut bytes = 0;
                    let _ = c.flush(&mut bytes);
                    self.drop_conn(id);
                    return;
                }
                Ok(n) => {
                    if c.phase != Phase::Closing {
                        c.inbuf.extend_from_slice(&self.rbuf[..n]);
                    }
                    self.process_input(id, now);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.reread.push(id);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
    }

    fn on_writable(&mut self, id: ConnId, now: u64) {
        if self.conn(id).is_some_and(|c| !c.is_drained()) {
            self.write(id, now);
        }
    }

    /// Flush one connection; handle completion, relief and death.
    fn write(&mut self, id: ConnId, now: u64) {
        let mut bytes = 0;
        let Some(c) = self.conn(id) else { return };
        let res = c.flush(&mut bytes);
        self.bytes += bytes;
        match res {
            Ok(true) => {
                let c = self.conn(id).expect("present above");
                if c.phase == Phase::Closing && !c.awaiting_http {
                    self.drop_conn(id);
                } else if c.congested {
                    self.relieve(id, now);
                }
            }
            Ok(false) => {
                let limit = self.shared.config.out_buffer_bytes;
                if self.conn(id).is_some_and(|c| c.congested && c.data_pending() <= limit / 2) {
                    self.relieve(id, now);
                }
            }
            Err(_) => self.drop_conn(id),
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(c) = self.conn(id) {
                c.dirty = false;
                self.write(id, now);
            }
        }
        dirty.clear();
        // Relief may have queued more: keep those for the next turn.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    // ── input ──────────────────────────────────────────────────────────

    fn process_input(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        match c.phase {
            Phase::Handshake => self.on_handshake(id, now),
            Phase::Open => self.on_frames(id, now),
            Phase::Closing => c.inbuf.clear(),
        }
    }

    fn http_reply(&mut self, id: ConnId, status: u16, ctype: &str, body: &[u8]) {
        if let Some(c) = self.conn(id) {
            c.ctrl_raw(&handshake::http_response(status, ctype, body));
            c.phase = Phase::Closing;
        }
        self.mark_dirty(id);
    }

    fn on_handshake(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        let (req, n) = match handshake::parse(&c.inbuf) {
            handshake::Head::Partial => return,
            handshake::Head::Invalid(status, why) => {
                Counters::inc(&self.shared.counters.handshake_failures);
                self.http_reply(id, status, "text/plain", format!("{why}\n").as_bytes());
                return;
            }
            handshake::Head::Complete(req, n) => (req, n),
        };
        c.inbuf.drain(..n);
        if !req.upgrade {
            // Answered by the `http` thread, off this loop; read nothing more.
            c.phase = Phase::Closing;
            c.awaiting_http = true;
            let conn = (id, c.gen);
            let job = crate::http::Job { worker: self.id, conn, req };
            if self.http_jobs.send(job).is_err() {
                self.drop_conn(id); // shutting down
            }
            return;
        }
        if let Some(why) = req.upgrade_error() {
            Counters::inc(&self.shared.counters.handshake_failures);
            self.http_reply(id, 400, "text/plain", format!("{why}\n").as_bytes());
            return;
        }
        let dialect = match (c.dialect, Dialect::for_path(&req.path)) {
            (Dialect::OpenAlgo, _) => Dialect::OpenAlgo,
            (_, Some(Dialect::Trading)) if !self.shared.config.trading.enabled => {
                Counters::inc(&self.shared.counters.handshake_failures);
                let body = b"the Trading WS endpoint /ws is disabled (WEBSOCKET_ENABLED=false)\n";
                self.http_reply(id, 404, "text/plain", body);
                return;
            }
            (_, Some(d)) if d.connection_cap(&self.shared.config).is_some_and(|max| {
                self.shared.dialect_connections[d as usize].load(Ordering::Acquire) >= max as u64
            }) =>
            {
                Counters::inc(&self.shared.counters.limit_rejections);
                let max = d.connection_cap(&self.shared.config).unwrap_or(0);
                self.http_reply(id, 503, "text/plain", d.refusal_at_cap(max).as_bytes());
                return;
            }
            (_, Some(d)) => d,
            (_, None) => {
                Counters::inc(&self.shared.counters.handshake_failures);
                let body = format!(
                    "no WebSocket endpoint at {}; endpoints: /stream (native), /enhanced-stream and /live-stream (Odin), /ws (Trading WS), /api/ws/prices (Campus), / (exchange streams)\n",
                    req.path.chars().take(128).collect::<String>()
                );
                self.http_reply(id, 404, "text/plain", body.as_bytes());
                return;
            }
        };
        // The key: `api_key=` or `Authorization: Bearer`. OpenAlgo clients
        // may instead authenticate with their first message.
        let key = req.param("api_key").or_else(|| req.bearer.clone());
        if dialect != Dialect::OpenAlgo || key.is_some() {
            if let Err((status, why)) = self.authenticate(id, key.as_deref()) {
                self.http_reply(id, status, "text/plain", why.as_bytes());
                return;
            }
        }
        match Protocol::open(&mut Ctx { w: self, id }, &req, dialect, now) {
            Ok(proto) => {
                if let Some(c) = self.conn(id) {
                    c.proto = proto;
                }
            }
            Err(why) => {
                Counters::inc(&self.shared.counters.handshake_failures);
                self.http_reply(id, 400, "text/plain", format!("{why}\n").as_bytes());
                return;
            }
        }
        self.mark_dirty(id);
        if self.conn(id).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_frames(id, now);
        }
    }

    fn on_frames(&mut self, id: ConnId, now: u64) {
        let max = self.shared.config.max_message_bytes;
        let Some(c) = self.conn(id) else { return };
        let mut buf = std::mem::take(&mut c.inbuf);
        let mut rx = std::mem::take(&mut c.rx);
        let (used, res) = rx.feed(&mut buf, max, |ev| self.on_event(id, ev, now));
        if let Err(why) = res {
            self.close_conn(id, why);
        }
        buf.drain(..used);
        if let Some(c) = self.conn(id).filter(|c| c.phase == Phase::Open) {
            c.inbuf = buf;
            c.rx = rx;
        }
    }

    /// One event of a connection's frames; stops the walk once the
    /// connection is no longer open.
    fn on_event(&mut self, id: ConnId, ev: message::Event<'_>, now: u64) -> ControlFlow<()> {
        let Some(c) = self.conn(id) else { return ControlFlow::Break(()) };
        match ev {
            message::Event::Ping(payload) => {
                c.ctrl_frame(frame::OP_PONG, payload);
                self.mark_dirty(id);
            }
            message::Event::Pong => c.last_pong_ns = now,
            message::Event::Close { code } => {
                c.close(code, "");
                self.mark_dirty(id);
            }
            message::Event::Message { binary, payload } => {
                let mut proto = std::mem::take(&mut c.proto);
                if binary {
                    proto.binary(&mut Ctx { w: self, id }, now);
                } else {
                    proto.text(&mut Ctx { w: self, id }, payload, now);
                }
                if let Some(c) = self.conn(id) {
                    c.proto = proto;
                }
            }
        }
        let limit = self.shared.config.out_buffer_bytes;
        if self.conn(id).is_some_and(|c| c.ctrl_pending() > limit) {
            let reason = "replies are not being read: control lane over the out-buffer limit";
            self.close_conn(id, CloseReason { code: close::POLICY, reason });
        }
        if self.conn(id).is_none_or(|c| c.phase != Phase::Open) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Check an API key for the subscribe role and take one of its user's
    /// connection slots; on refusal, the HTTP status and body to answer.
    /// Counted; the body never says which part of the key was wrong.
    pub(crate) fn authenticate(&mut self, id: ConnId, key: Option<&str>) -> Result<(), (u16, String)> {
        use crate::auth::{role, Refused};
        let user = match self.shared.auth.check(key, role::SUBSCRIBE) {
            Ok(u) => u,
            Err(r) => {
                Counters::inc(&self.shared.counters.auth_failures);
                let why = match r {
                    Refused::Missing => "an API key is required: `api_key=` or `Authorization: Bearer <key>`\n",
                    Refused::Invalid => "invalid API key\n",
                    Refused::Forbidden => "this API key may not subscribe\n",
                };
                log::info!("refused a connection: {}", why.trim_end());
                return Err((401, why.into()));
            }
        };
        if !user.try_connect() {
            Counters::inc(&self.shared.counters.limit_rejections);
            let max = user.max_connections.unwrap_or(0);
            return Err((429, format!("user {} is at its connection limit ({max})\n", user.id)));
        }
        if let Some(c) = self.conn(id) {
            c.user = Some(user);
        } else {
            user.disconnect();
        }
        Ok(())
    }

    /// Queue the native heartbeat for `id`; it is built once per
    /// housekeeping pass and the same bytes go to every idle client.
    pub(crate) fn send_heartbeat(&mut self, id: ConnId, now: u64) {
        if self.heartbeat.as_ref().is_none_or(|(t, _)| *t != now) {
            let feeds = self.shared.feeds.iter().map(|f| (f.name.as_str(), f.state_name(now), f.last_tick_age_ms(now)));
            let market_open = self.shared.market_open.load(Ordering::Relaxed);
            self.heartbeat = Some((now, native::heartbeat(feeds, market_open, now)));
        }
        let hb = &self.heartbeat.as_ref().expect("set above").1;
        if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
            c.ctrl_text(hb, now);
        }
        self.mark_dirty(id);
    }

    // ── subscriptions ──────────────────────────────────────────────────

    /// Subscribe `id` to `slot`; a new subscription gets the cached last
    /// value first (snapshot-then-live). Returns false at the per-connection
    /// limit.
    pub(crate) fn subscribe(
        &mut self,
        id: ConnId,
        slot: Slot,
        enc: Encoding,
        delivery: Delivery,
        now: u64,
    ) -> Result<(), &'static str> {
        let limit = self.shared.config.max_subscriptions;
        let known = self.subs.contains(slot, id);
        let c = self.conn(id).ok_or("connection gone")?;
        if !known && c.slots.len() + c.channels.len() >= limit {
            return Err("subscription limit reached");
        }
        if !known && c.user.as_ref().is_some_and(|u| !u.try_subscribe()) {
            return Err("the user's subscription limit reached");
        }
        match self.subs.subscribe(slot, id, enc, delivery) {
            Added::Updated => return Ok(()),
            Added::New { first } => {
                if first {
                    // SeqCst bit before the cache read: see `ring` and `lvc`.
                    self.shared.hub.interest.set(slot, self.id);
                    // A SeqCst RMW alone does not order the later Acquire
                    // loads of the cache; the fence pairs with the feed's.
                    fence(Ordering::SeqCst);
                }
            }
        }
        let c = self.conns[id.0 as usize].as_mut().expect("checked above");
        c.slots.push(slot);
        if let Some(t) = self.shared.hub.lvc.load(slot) {
            let ins = self.shared.registry.get(slot);
            let sub = self.subs.subscribers_mut(slot).last_mut().expect("a new subscription is pushed last");
            debug_assert_eq!(sub.conn, id);
            if c.congested {
                sub.pending = true; // delivered when the client drains
            } else if enc.format == encode::Format::Batched {
                sub.last_seq = t.seq;
                c.batch.mark(slot);
            } else {
                sub.last_seq = t.seq;
                self.scratch.clear();
                let r = encode::encode(&mut self.scratch, enc, &t, ins, Marks { snapshot: true, conflated: false });
                if !r.is_empty() {
                    c.data_frame(&self.scratch[r], now);
                    self.frames += 1;
                }
            }
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Remove `id`'s subscription to `slot`; false if there was none.
    pub(crate) fn unsubscribe(&mut self, id: ConnId, slot: Slot) -> bool {
        match self.subs.unsubscribe(slot, id) {
            None => false,
            Some(now_empty) => {
                if now_empty && self.all_instruments.is_empty() {
                    self.shared.hub.interest.clear(slot, self.id);
                }
                if let Some(c) = self.conn(id) {
                    if let Some(i) = c.slots.iter().position(|&s| s == slot) {
                        c.slots.remove(i);
                    }
                    if let Some(u) = &c.user {
                        u.unsubscribed(1);
                    }
                }
                true
            }
        }
    }

    /// `id` now receives every instrument (a Trading WS client before its
    /// first subscribe). The first such connection makes this worker
    /// interested in every slot; the caller then takes the cached values
    /// (the SeqCst fence orders the bits before those reads, as in
    /// `subscribe`). False if it was already there.
    pub(crate) fn join_all_instruments(&mut self, id: ConnId) -> bool {
        if self.all_instruments.contains(&id) {
            return false;
        }
        if self.all_instruments.is_empty() {
            for (slot, _) in self.shared.registry.iter() {
                self.shared.hub.interest.set(slot, self.id);
            }
            fence(Ordering::SeqCst);
        }
        self.all_instruments.push(id);
        true
    }

    /// `id` no longer receives every instrument. When the last such
    /// connection leaves, slots nobody here subscribes to lose this
    /// worker's interest. False if it was not there.
    pub(crate) fn leave_all_instruments(&mut self, id: ConnId) -> bool {
        let Some(i) = self.all_instruments.iter().position(|&x| x == id) else { return false };
        self.all_instruments.swap_remove(i);
        if self.all_instruments.is_empty() {
            for slot in (0..self.shared.registry.len()).map(|s| Slot(s as u32)) {
                if self.subs.subscribers_mut(slot).is_empty() {
                    self.shared.hub.interest.clear(slot, self.id);
                }
            }
        }
        true
    }

    /// Subscribe `id` to the channel `name`, received as `kind`: checks the
    /// name, privacy (`private:<user>:…` is its user's alone), the
    /// per-connection and per-user limits. `Ok(false)`: already subscribed.
    ///
    /// # Errors
    /// Why not, for the client.
    pub(crate) fn join_channel(&mut self, id: ConnId, name: &str, kind: ChanKind) -> Result<bool, String> {
        let limit = self.shared.config.max_subscriptions;
        let c = self.conns.get(id.0 as usize).and_then(Option::as_ref).ok_or("connection gone")?;
        if let Some(owner) = crate::channel::private_owner(name) {
            if c.user.as_ref().is_none_or(|u| *u.id != *owner) {
                return Err("private channel of another user".into());
            }
        }
        let existing = self.shared.channels.lookup(name);
        if existing.is_some_and(|ch| c.channels.contains(&ch)) {
            return Ok(false);
        }
        if c.slots.len() + c.channels.len() >= limit {
            return Err(format!("subscription limit reached ({limit} per connection)"));
        }
        let ch = self.shared.channels.id(name).map_err(|e| e.message().to_string())?;
        if c.user.as_ref().is_some_and(|u| !u.try_subscribe()) {
            return Err("the user's subscription limit reached".into());
        }
        let i = ch.0 as usize;
        if self.chan_subs.len() <= i {
            self.chan_subs.resize_with(i + 1, Default::default);
        }
        if self.chan_subs[i].is_empty() {
            self.shared.hub.channel_interest.set(ch, self.id);
        }
        let last_seq = self.shared.channels.current_seq(ch);
        self.chan_subs[i].push(ChanSub { conn: id, kind, last_seq });
        if let Some(c) = self.conn(id) {
            c.channels.push(ch);
        }
        Ok(true)
    }

    /// Unsubscribe `id` from channel `ch`; false if it was not subscribed.
    pub(crate) fn unsubscribe_channel(&mut self, id: ConnId, ch: ChannelId) -> bool {
        if !self.remove_channel_sub(id, ch) {
            return false;
        }
        if let Some(c) = self.conn(id) {
            c.channels.retain(|&x| x != ch);
            if let Some(u) = &c.user {
                u.unsubscribed(1);
            }
        }
        true
    }

    fn remove_channel_sub(&mut self, id: ConnId, ch: ChannelId) -> bool {
        let Some(list) = self.chan_subs.get_mut(ch.0 as usize) else { return false };
        let Some(i) = list.iter().position(|s| s.conn == id) else { return false };
        list.swap_remove(i);
        if list.is_empty() {
            self.shared.hub.channel_interest.clear(ch, self.id);
        }
        true
    }

    /// Drain channel rings: the message's frame goes to every subscriber as
    /// is. Opaque payloads cannot be conflated: a congested client misses
    /// them and gets a `gap` notice with the missed range once it drains.
    fn drain_channels(&mut self, now: u64) -> usize {
        let mut rings = std::mem::take(&mut self.chan_rings);
        let mut n = 0;
        for ring in &mut rings {
            while let Ok(msg) = ring.pop() {
                n += 1;
                let Some(list) = self.chan_subs.get_mut(msg.channel.0 as usize) else { continue };
                for sub in list.iter_mut() {
                    let Some(c) = self.conns.get_mut(sub.conn.0 as usize).and_then(Option::as_mut) else { continue };
                    if c.congested || c.phase != Phase::Open {
                        continue; // missed: the hole shows at the next delivery
                    }
                    if sub.kind == ChanKind::Held {
                        sub.last_seq = sub.last_seq.max(msg.seq);
                        c.held = Some(msg.raw.clone()); // the dialect takes the newest on its schedule
                        continue;
                    }
                    if msg.seq > sub.last_seq + 1 && sub.kind == ChanKind::Native {
                        let name = self.shared.channels.name(msg.channel).unwrap_or_default();
                        let gap = serde_json::json!({"type": "gap", "channel": &*name, "from_seq": sub.last_seq + 1, "to_seq": msg.seq - 1});
                        c.ctrl_text(gap.to_string().as_bytes(), now);
                        Counters::inc(&self.shared.counters.gaps_sent);
                    }
                    sub.last_seq = sub.last_seq.max(msg.seq);
                    c.data_frame(if sub.kind == ChanKind::Native { &msg.frame } else { &msg.raw }, now);
                    self.frames += 1;
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(sub.conn);
                    }
                }
            }
        }
        self.chan_rings = rings;
        n
    }

    // ── fan-out ────────────────────────────────────────────────────────

    /// Drain every ring (up to a limit each) and fan the ticks out.
    fn drain(&mut self, now: u64) -> usize {
        let mut rings = std::mem::take(&mut self.rings);
        let mut n = 0;
        for ring in &mut rings {
            let avail = ring.slots().min(DRAIN_LIMIT);
            if avail == 0 {
                continue;
            }
            let chunk = ring.read_chunk(avail).expect("slots() said these are available");
            let (a, b) = chunk.as_slices();
            for t in a.iter().chain(b) {
                self.fan_out(t, now);
            }
            chunk.commit_all();
            n += avail;
        }
        self.rings = rings;
        n
    }

    /// The hot path: one tick to every subscriber of its slot.
    #[inline]
    fn fan_out(&mut self, t: &Tick, now: u64) {
        let slot = Slot(t.slot);
        let limit = self.shared.config.out_buffer_bytes;
        let ins = self.shared.registry.get(slot);
        self.cache.reset();
        let mut delivered = false;
        for sub in self.subs.subscribers_mut(slot) {
            if t.seq <= sub.last_seq {
                continue; // already sent (snapshot overlap)
            }
            let Some(c) = self.conns.get_mut(sub.conn.0 as usize).and_then(Option::as_mut) else {
                debug_assert!(false, "subscription of a dropped connection");
                continue;
            };
            if let Delivery::MaxRate { interval_ns } = sub.delivery {
                if now < sub.next_ok_ns {
                    if !sub.pending {
                        sub.pending = true;
                        self.timers.push(Reverse((sub.next_ok_ns, sub.conn.0, slot.0)));
                    }
                    continue;
                }
                sub.next_ok_ns = now.saturating_add(interval_ns);
            }
            if c.congested || c.phase != Phase::Open {
                if sub.delivery == Delivery::Lossless && c.phase == Phase::Open {
                    c.close(
                        close::TRY_AGAIN_LATER,
                        "slow consumer: lossless subscription fell behind the out-buffer limit",
                    );
                    Counters::inc(&self.shared.counters.slow_disconnects);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(sub.conn);
                    }
                } else {
                    sub.pending = true;
                }
                continue;
            }
            if sub.enc.format == encode::Format::Batched {
                sub.last_seq = t.seq;
                c.batch.mark(slot);
                delivered = true;
                continue;
            }
            if matches!(sub.delivery, Delivery::MaxRate { .. }) && std::mem::take(&mut sub.pending) {
                // A rate cap held ticks back and this one arrived before the
                // trailing-edge timer ran (a late turn): it carries the
                // `conflated` mark, so it is this client's own frame.
                self.scratch.clear();
                let r = encode::encode(&mut self.scratch, sub.enc, t, ins, Marks { snapshot: false, conflated: true });
                c.data_frame(&self.scratch[r], now);
            } else {
                let f = self.cache.get(sub.enc, t, ins);
                if f.is_empty() {
                    continue; // nothing in this format for this tick (an exchange trade stream, no trade)
                }
                c.data_frame(f, now);
            }
            sub.last_seq = t.seq;
            self.frames += 1;
            delivered = true;
            if c.data_pending() > limit {
                congest(c, &self.shared.counters);
            }
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(sub.conn);
            }
        }
        for &id in &self.all_instruments {
            if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
                c.batch.mark(slot);
            }
        }
        if delivered {
            self.batch_ts.push(t.ts_ns);
        }
    }

    /// Mark `id` congested if its data lane is past the out-buffer limit.
    pub(crate) fn check_congestion(&mut self, id: ConnId) {
        let limit = self.shared.config.out_buffer_bytes;
        let counters = &self.shared.counters;
        if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
            if !c.congested && c.data_pending() > limit {
                congest(c, counters);
            }
        }
    }

    /// Deliver the newest value of a held-back subscription, marked
    /// `conflated`; a `gap` notice first when `with_gap` and seqs were skipped.
    fn deliver_latest(&mut self, id: ConnId, slot: Slot, with_gap: bool, now: u64) {
        if self.conn(id).is_none_or(|c| c.phase != Phase::Open) {
            return; // never data after a close frame
        }
        let Some(t) = self.shared.hub.lvc.load(slot) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(slot, id) else {
            return;
        };
        sub.pending = false;
        if t.seq <= sub.last_seq {
            return;
        }
        let (from, to) = (sub.last_seq + 1, t.seq - 1);
        let conflated = to >= from && sub.last_seq != 0;
        sub.last_seq = t.seq;
        let enc = sub.enc;
        if let Delivery::MaxRate { interval_ns } = sub.delivery {
            sub.next_ok_ns = now.saturating_add(interval_ns);
        }
        let ins = self.shared.registry.get(slot);
        let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        if with_gap && conflated {
            if let Some(notice) = c.proto.gap_notice(t.token, from, to) {
                c.ctrl_text(&notice, now);
                Counters::inc(&self.shared.counters.gaps_sent);
            }
        }
        if enc.format == encode::Format::Batched {
            c.batch.mark(slot);
            return;
        }
        self.scratch.clear();
        let r = encode::encode(&mut self.scratch, enc, &t, ins, Marks { snapshot: false, conflated });
        if !r.is_empty() {
            c.data_frame(&self.scratch[r], now);
            self.frames += 1;
        }
        self.mark_dirty(id);
    }

    /// The client drained below half its limit: send what was held back.
    fn relieve(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        c.congested = false;
        let slots = std::mem::take(&mut c.slots);
        for &slot in &slots {
            if let Some(s) = self.subs.get(slot, id).filter(|s| s.pending) {
                // A rate cap drops by design (flagged `conflated`); a slow
                // consumer's drops also get a `gap` notice.
                let with_gap = !matches!(s.delivery, Delivery::MaxRate { .. });
                self.deliver_latest(id, slot, with_gap, now);
            }
        }
        if let Some(c) = self.conn(id) {
            c.slots = slots;
        }
    }

    /// Tell every client the market opened or closed.
    fn announce_market(&mut self, now: u64) {
        self.market_open = !self.market_open;
        let status = Dialect::ALL.map(|d| dialect::market_status(d, self.market_open, now));
        for i in 0..self.conns.len() {
            if let Some(c) = self.conns[i].as_mut().filter(|c| c.phase == Phase::Open) {
                let s = &status[c.dialect as usize];
                if !s.is_empty() {
                    c.ctrl_text(s, now);
                    self.mark_dirty(ConnId(i as u32));
                }
            }
        }
    }

    /// A ring overran: some ticks never reached this worker. Every
    /// subscription catches up from the last-value cache (`gap` + the
    /// newest value, flagged `conflated`); lossless ones close with 1013.
    fn resync(&mut self, now: u64) {
        log::warn!("worker {}: a feed ring overran; resynchronising subscribers from the cache", self.id);
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            let Some(c) = self.conns[i].as_mut().filter(|c| c.phase == Phase::Open) else { continue };
            let slots = std::mem::take(&mut c.slots);
            for &slot in &slots {
                match self.subs.get(slot, id).map(|s| s.delivery) {
                    Some(Delivery::Lossless) => {
                        let reason = "ticks were lost in a ring overrun (lossless subscription)";
                        self.close_conn(id, CloseReason { code: close::TRY_AGAIN_LATER, reason });
                        break;
                    }
                    Some(_) => self.deliver_latest(id, slot, true, now),
                    None => {}
                }
            }
            if let Some(c) = self.conn(id) {
                c.slots = slots;
            }
        }
        // Connections that see every instrument have no per-slot state:
        // their next batch carries every instrument's newest value.
        for &id in &self.all_instruments {
            if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
                for slot in 0..self.shared.registry.len() {
                    c.batch.mark(Slot(slot as u32));
                }
            }
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((due, conn, slot))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let (id, slot) = (ConnId(conn), Slot(slot));
            // `next_ok_ns == due` identifies the subscription that scheduled
            // this timer: a stale entry (unsubscribed, or a reused ConnId)
            // does not match and is ignored.
            let ready = self.subs.get(slot, id).is_some_and(|s| s.pending && s.next_ok_ns == due)
                && self.conn(id).is_some_and(|c| !c.congested && c.phase == Phase::Open);
            if ready {
                self.deliver_latest(id, slot, false, now);
            }
        }
    }

    // ── timers, metrics, shutdown ──────────────────────────────────────

    fn housekeeping(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            match c.phase {
                Phase::Handshake if now.saturating_sub(c.opened_ns) > HANDSHAKE_TIMEOUT_NS => {
                    Counters::inc(&self.shared.counters.handshake_failures);
                    self.drop_conn(id);
                }
                Phase::Open => {
                    let mut proto = std::mem::take(&mut c.proto);
                    proto.housekeeping(&mut Ctx { w: self, id }, now);
                    if let Some(c) = self.conn(id) {
                        c.proto = proto;
                    }
                }
                Phase::Closing if now.saturating_sub(c.last_tx_ns) > HANDSHAKE_TIMEOUT_NS => {
                    // A peer that never reads its close frame.
                    self.drop_conn(id);
                }
                _ => {}
            }
        }
    }

    fn publish_metrics(&mut self) {
        let g = &self.shared.gauges[self.id];
        g.connections.store(self.open, Ordering::Relaxed);
        g.subscriptions.store(self.subs.len() as u64, Ordering::Relaxed);
        if !self.hist.is_empty() {
            let _ = g.latency.lock().add(&self.hist);
            self.hist.reset();
        }
        let c = &self.shared.counters;
        Counters::add(&c.frames_sent, std::mem::take(&mut self.frames));
        Counters::add(&c.bytes_written, std::mem::take(&mut self.bytes));
    }

    /// Close 1001 to every client, give them up to a second to drain, exit.
    fn shutdown(&mut self) {
        let now = now_ns();
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            match self.conns[i].as_mut().map(|c| c.phase) {
                Some(Phase::Open) => {
                    self.conns[i].as_mut().expect("matched").close(close::GOING_AWAY, "server shutting down");
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
        self.publish_metrics();
    }
}

/// The slow-consumer policy applies to `c` from now on: data is held back
/// (conflated) until it drains. Counted; logged once per connection.
fn congest(c: &mut Conn, counters: &Counters) {
    c.congested = true;
    Counters::inc(&counters.slow_conflations);
    if c.logged & conn::logged::SLOW == 0 {
        c.logged |= conn::logged::SLOW;
        log::warn!(
            "client {} passed its out-buffer limit ({} bytes queued): slow-consumer policy applies",
            c.client_id,
            c.data_pending()
        );
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
