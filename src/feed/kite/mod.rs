//! `kite://HOST?api_key=K&access_token=T` (TLS) and `kite+ws://HOST:PORT/PATH?…`
//! (plain): Kite Connect's ticker WebSocket as a source, or another
//! tickcast's `/kite` (chaining). Kite limits what one API key may take (3
//! connections × 3,000 instruments), so this source subscribes upstream
//! only to what local clients want, as [`Demand`] says, and the workers
//! refuse a new instrument once that capacity is used.
//!
//! - Interest: [`Demand::version`] is polled every 50 ms; when it moved,
//!   [`Spread::update`] diffs the wanted set against what is subscribed,
//!   keeps every instrument on the connection it was put on, places new
//!   ones on the first connection with room (opening it only then), and
//!   batches one request per action per connection (`subscribe`, then
//!   `mode` per mode, in each instrument's highest wanted mode;
//!   `unsubscribe` when nobody wants it).
//! - Decode: [`Decoder`] checks each binary frame whole (`kite::packets`: a
//!   broken frame is dropped as one and counted by kind), applies each
//!   packet onto the instrument's previous state without partial writes,
//!   stamps token, slot, seq and times, and publishes: no allocation per
//!   tick (tungstenite allocates one buffer per frame).
//! - Text: order postbacks go to channel `private:USER:orders` (`user=` or
//!   `--kite-order-user`; each postback arrives on every connection, so
//!   only connection 0's are relayed); `{"type":"error"}` is logged (once a
//!   minute per distinct text) and counted; anything else is counted.
//! - Links: every connection is opened blocking (TCP, TLS with the web PKI
//!   roots plus `ca=`, WebSocket handshake; a few seconds at most), then
//!   read non-blocking from one `mio::Poll` on this thread. A link silent
//!   for 3 s (Kite sends a 1-byte heartbeat every second) is closed and
//!   reopened; every failure retries with exponential backoff and jitter
//!   (up to 30 s), and a reopened link subscribes again to all it carries.
//!   A refused handshake (403: a wrong or expired token) is logged once per
//!   status. Connection 0 stays open even with nothing wanted (it carries
//!   the order postbacks); the others close when they carry nothing.
//!
//! The access token is never logged or shown: `/status` shows
//! [`KiteSpec::redacted`].

//!
//! Files: `spread` (which connection carries what: pure), `decode` (frames
//! → ticks: sans-IO), `link` (TCP, TLS and the handshake), `health`
//! (`/status` and `/metrics`); the source's loop is here.

mod decode;
mod health;
mod link;
mod spread;

pub use decode::Decoder;
pub use health::{metrics, KiteHealth};
pub use spread::{Requests, Spread};

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mio::unix::SourceFd;
use rustls::ClientConfig;
use serde_json::Value;
use std::os::fd::AsRawFd;
use tungstenite::Message;

use super::spec::KiteSpec;
use super::{backoff, stopping, FeedCtx, Source, STATE_CONNECTING, STATE_LIVE, STATE_STALE};
use crate::instrument::Registry;
use crate::tick::now_ns;
use link::{connect, tls_config, ConnectError, Link};

/// How often local interest is re-read (and the longest wait for I/O).
const POLL: Duration = Duration::from_millis(50);
/// A link without any frame (data or heartbeat) for this long is dead.
pub const STALL: Duration = Duration::from_secs(3);
/// Most frames read from one link before the others get their turn and
/// the workers are woken.
const ROUND_FRAMES: usize = 64;
/// Longest such round.
const ROUND_TIME: Duration = Duration::from_millis(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The same upstream error text is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// A `kite://` / `kite+ws://` source.
pub struct KiteFeed {
    /// Where, as whom, and the limits.
    spec: KiteSpec,
    /// TLS settings (`kite://`), loaded once.
    tls: Option<Arc<ClientConfig>>,
    /// Each instrument's state.
    decoder: Decoder,
}

impl KiteFeed {
    /// A source for `spec` (TLS settings loaded now); connects when run.
    ///
    /// # Errors
    /// An unreadable or empty `ca=` file.
    pub fn new(spec: KiteSpec, registry: &Registry) -> Result<KiteFeed> {
        let tls = match spec.tls {
            true => Some(tls_config(spec.ca.as_deref()).with_context(|| format!("feed {}", spec.redacted()))?),
            false => None,
        };
        Ok(KiteFeed { spec, tls, decoder: Decoder::new(registry) })
    }
}

/// The running source: its links and what they carry.
struct Upstream {
    /// The spec, TLS settings and decoder.
    feed: KiteFeed,
    /// Readiness of the open links (token = connection index).
    poll: mio::Poll,
    /// One per connection allowed, open or not.
    links: Vec<Link>,
    /// Which connection carries which instrument.
    spread: Spread,
    /// Per connection: this round's requests.
    requests: Vec<Requests>,
    /// When each distinct upstream error text was last logged.
    errors_logged: HashMap<String, Instant>,
    /// `private:USER:orders`, when a user is configured.
    orders_channel: Option<String>,
}

impl Upstream {
    fn kite<'a>(&self, ctx: &'a FeedCtx) -> &'a KiteHealth {
        ctx.health.kite.as_ref().expect("a kite feed's health has a kite part")
    }

    /// Is connection `c` wanted open? (0 always: it carries order postbacks.)
    fn needed(&self, c: usize) -> bool {
        c == 0 || self.spread.load(c) > 0
    }

    /// Send `requests[c]` on link `c` if it is up (a down link gets all it
    /// carries when it reopens), then clear them.
    fn send(&mut self, c: usize, ctx: &FeedCtx) {
        let mut failed = None;
        if let Some(ws) = self.links[c].ws.as_mut() {
            for text in self.requests[c].messages() {
                match ws.send(Message::Text(text)) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {} // queued
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        self.requests[c].clear();
        if let Some(why) = failed {
            self.lost(c, ctx, &format!("sending requests: {why}"));
        }
    }

    /// Link `c` (up) is lost: close it, count it, retry soon.
    fn lost(&mut self, c: usize, ctx: &FeedCtx, why: &str) {
        log::warn!("feed {}: connection {c} lost ({why}); reconnecting", ctx.health.name);
        self.close(c, ctx);
        ctx.health.reconnects.fetch_add(1, Ordering::Relaxed);
        let link = &mut self.links[c];
        link.retry_at = Instant::now() + backoff(0, BACKOFF_MIN, BACKOFF_MAX);
        link.attempt = 1;
    }

    /// Close link `c` if it is open.
    fn close(&mut self, c: usize, ctx: &FeedCtx) {
        if let Some(mut ws) = self.links[c].ws.take() {
            let fd = ws.get_ref().tcp().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            let _ = ws.close(None);
            let _ = ws.flush();
            self.kite(ctx).connections_open.fetch_sub(1, Ordering::Relaxed);
        }
        self.links[c].more = false;
    }

    /// Try to open link `c`; on success subscribe to all it carries.
    fn open(&mut self, c: usize, ctx: &FeedCtx) {
        let name = &ctx.health.name;
        let kite = self.kite(ctx);
        match connect(&self.feed.spec, self.feed.tls.as_ref()) {
            Ok(ws) => {
                let fd = ws.get_ref().tcp().as_raw_fd();
                if let Err(e) =
                    self.poll.registry().register(&mut SourceFd(&fd), mio::Token(c), mio::Interest::READABLE)
                {
                    log::error!("feed {name}: registering connection {c}: {e}");
                    self.links[c].retry_at = Instant::now() + BACKOFF_MAX;
                    return;
                }
                log::info!("feed {name}: connection {c} open to {}", self.feed.spec.redacted());
                let link = &mut self.links[c];
                (link.ws, link.last_frame, link.attempt) = (Some(ws), Instant::now(), 0);
                (link.refused, link.failing) = (None, false);
                kite.connections_open.fetch_add(1, Ordering::Relaxed);
                let registry = &ctx.registry;
                self.requests[c].clear();
                self.spread.all_on(c, |s| registry.get(s).kite_token, &mut self.requests[c]);
                self.send(c, ctx);
            }
            Err(e) => {
                let link = &mut self.links[c];
                let wait = backoff(link.attempt, BACKOFF_MIN, BACKOFF_MAX);
                link.attempt += 1;
                link.retry_at = Instant::now() + wait;
                match e {
                    ConnectError::Refused(status) => {
                        kite.handshake_refusals.fetch_add(1, Ordering::Relaxed);
                        kite.error(format!("handshake refused: HTTP {status}"));
                        if link.refused != Some(status) {
                            link.refused = Some(status);
                            log::warn!(
                                "feed {name}: {} refused the handshake with HTTP {status} (403: a wrong or expired access token); retrying with backoff up to {BACKOFF_MAX:?}",
                                self.feed.spec.redacted()
                            );
                        } else {
                            log::debug!("feed {name}: handshake refused again (HTTP {status}); retrying in {wait:?}");
                        }
                    }
                    ConnectError::Failed(why) => {
                        kite.connect_failures.fetch_add(1, Ordering::Relaxed);
                        if !link.failing {
                            link.failing = true;
                            log::warn!("feed {name}: connection {c} to {} failed: {why}; retrying with backoff up to {BACKOFF_MAX:?}", self.feed.spec.redacted());
                        } else {
                            log::debug!("feed {name}: connection {c} failed again: {why}; retrying in {wait:?}");
                        }
                        kite.error(why);
                    }
                }
            }
        }
    }

    /// Read link `c` until WouldBlock or the round's bound.
    fn read(&mut self, c: usize, ctx: &mut FeedCtx) {
        let round = Instant::now();
        self.links[c].more = false;
        for _ in 0..ROUND_FRAMES {
            let Some(ws) = self.links[c].ws.as_mut() else { return };
            let msg = match ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost(c, ctx, &e.to_string()),
            };
            self.links[c].last_frame = Instant::now();
            let recv_ns = now_ns();
            match msg {
                Message::Binary(frame) => {
                    let kite = ctx.health.kite.as_ref().expect("a kite feed's health has a kite part");
                    let fanout = &mut ctx.fanout;
                    let n = self.feed.decoder.frame(&frame, recv_ns, &ctx.registry, kite, |t| fanout.publish(t));
                    if n > 0 {
                        ctx.health.published(n, recv_ns);
                    }
                }
                Message::Text(text) => self.text(c, &text, recv_ns, ctx),
                Message::Close(_) => return self.lost(c, ctx, "closed by upstream"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {} // tungstenite answers pings
            }
            if round.elapsed() > ROUND_TIME {
                break;
            }
        }
        self.links[c].more = true;
    }

    /// A text message on link `c`: an order postback, an error, or ignored.
    fn text(&mut self, c: usize, text: &str, recv_ns: u64, ctx: &mut FeedCtx) {
        let kite = ctx.health.kite.as_ref().expect("a kite feed's health has a kite part");
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                kite.text_ignored.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match (v.get("type").and_then(Value::as_str), v.get("data")) {
            // Every connection gets each postback: relay connection 0's.
            (Some("order"), Some(data @ Value::Object(_))) if c == 0 => {
                let name = self.orders_channel.as_deref();
                let id = name.and_then(|n| ctx.channel_table.id(n).ok());
                match (name, id, ctx.channels.as_mut()) {
                    (Some(name), Some(id), Some(ch)) => {
                        let payload = data.to_string();
                        ch.publish(&ctx.channel_table.message(id, name, payload.as_bytes(), recv_ns));
                        kite.orders.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        kite.orders_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (Some("order"), Some(Value::Object(_))) => {}
            (Some("error"), data) => {
                kite.upstream_errors.fetch_add(1, Ordering::Relaxed);
                let msg = match data {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let now = Instant::now();
                let due = self.errors_logged.get(&msg).is_none_or(|t| now.duration_since(*t) >= ERROR_LOG_EVERY);
                if due {
                    if self.errors_logged.len() >= 256 {
                        self.errors_logged.clear();
                    }
                    log::warn!("feed {}: upstream error: {msg}", ctx.health.name);
                    self.errors_logged.insert(msg.clone(), now);
                }
                kite.error(format!("upstream: {msg}"));
            }
            _ => {
                kite.text_ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Follow demand, keep the links that are needed open, read them.
    fn run(&mut self, ctx: &mut FeedCtx, demand: &crate::demand::Demand) -> io::Result<()> {
        let n = self.links.len();
        let mut events = mio::Events::with_capacity(n.max(4));
        let mut wanted = Vec::new();
        let mut seen = None;
        let mut was_up = false;
        while !stopping(&ctx.shutdown) {
            if seen != Some(demand.version()) {
                seen = Some(demand.wanted(&mut wanted));
                let registry = ctx.registry.clone();
                let no_room = self.spread.update(&wanted, |s| registry.get(s).kite_token, &mut self.requests);
                if no_room > 0 {
                    log::warn!("feed {}: {no_room} wanted instrument(s) found no room upstream", ctx.health.name);
                }
                for c in 0..n {
                    self.send(c, ctx);
                }
                self.kite(ctx).subscribed.store(self.spread.total() as u64, Ordering::Relaxed);
                ctx.health.wanted(self.spread.total() as u64, crate::tick::now_ns());
            }
            let now = Instant::now();
            for c in 0..n {
                match (self.links[c].ws.is_some(), self.needed(c)) {
                    (true, false) => {
                        log::info!("feed {}: connection {c} carries nothing; closing it", ctx.health.name);
                        self.close(c, ctx);
                    }
                    (false, true) if now >= self.links[c].retry_at => self.open(c, ctx),
                    _ => {}
                }
            }
            // Down after having been up: `stale` (client heartbeats say so).
            let up = (0..n).all(|c| !self.needed(c) || self.links[c].ws.is_some());
            was_up |= up;
            let state = match (up, was_up) {
                (true, _) => STATE_LIVE,
                (false, true) => STATE_STALE,
                (false, false) => STATE_CONNECTING,
            };
            // Up again: what it asked for is on its way; silence counts from now.
            if ctx.health.state.swap(state, Ordering::Relaxed) != STATE_LIVE && state == STATE_LIVE {
                ctx.health.resubscribed(crate::tick::now_ns());
            }
            let wait = if self.links.iter().any(|l| l.more) { Duration::ZERO } else { POLL };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for c in 0..n {
                if self.links[c].ws.is_some() {
                    self.read(c, ctx);
                }
                // Queued requests and pong replies.
                if let Some(ws) = self.links[c].ws.as_mut() {
                    match ws.flush() {
                        Ok(()) => {}
                        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => self.lost(c, ctx, &e.to_string()),
                    }
                }
                // After reading: what arrived while this thread was busy counts.
                if self.links[c].ws.is_some() && self.links[c].last_frame.elapsed() > STALL {
                    self.kite(ctx).stalls.fetch_add(1, Ordering::Relaxed);
                    self.lost(c, ctx, &format!("no frame for {STALL:?}"));
                }
            }
            ctx.fanout.flush();
            if let Some(ch) = ctx.channels.as_mut() {
                ch.flush();
            }
        }
        for c in 0..n {
            self.close(c, ctx);
        }
        Ok(())
    }
}

impl Source for KiteFeed {
    fn kind(&self) -> &'static str {
        "kite"
    }

    fn address(&self) -> String {
        self.spec.redacted()
    }

    fn publishes_channels(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, mut ctx: FeedCtx) {
        let Some(demand) = ctx.demand.clone() else {
            log::error!("feed {}: no demand table (a kite feed runs only in the server)", ctx.health.name);
            return;
        };
        let spec = &self.spec;
        let kite = ctx.health.kite.as_ref().expect("a kite feed's health has a kite part");
        kite.connections_max.store(spec.connections as u64, Ordering::Relaxed);
        kite.capacity.store((spec.connections * spec.instruments) as u64, Ordering::Relaxed);
        let poll = match mio::Poll::new() {
            Ok(p) => p,
            Err(e) => return log::error!("feed {}: epoll: {e}", ctx.health.name),
        };
        let mut up = Upstream {
            links: (0..spec.connections).map(|_| Link::new()).collect(),
            spread: Spread::new(ctx.registry.len(), spec.connections, spec.instruments),
            requests: vec![Requests::default(); spec.connections],
            errors_logged: HashMap::new(),
            orders_channel: spec.orders_channel(),
            poll,
            feed: *self,
        };
        ctx.health.state.store(STATE_CONNECTING, Ordering::Relaxed);
        if let Err(e) = up.run(&mut ctx, &demand) {
            log::error!("feed {}: {e}", ctx.health.name);
        }
    }
}
