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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mio::unix::SourceFd;
use parking_lot::Mutex;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use super::spec::KiteSpec;
use super::{backoff, stopping, FeedCtx, FeedHealth, Source, STATE_CONNECTING, STATE_LIVE};
use crate::instrument::{Registry, Slot};
use crate::kite::{self as wire, DecodeError};
use crate::tick::{now_ns, Mode, Tick};

/// How often local interest is re-read (and the longest wait for I/O).
const POLL: Duration = Duration::from_millis(50);
/// A link without any frame (data or heartbeat) for this long is dead.
pub const STALL: Duration = Duration::from_secs(3);
/// TCP connect, TLS and WebSocket handshake timeout, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most frames read from one link before the others get their turn and
/// the workers are woken.
const ROUND_FRAMES: usize = 64;
/// Longest such round.
const ROUND_TIME: Duration = Duration::from_millis(5);
/// Largest message taken from upstream: a full frame for 3,000 instruments
/// is about 560 kB; anything far beyond is not Kite and closes the link.
const MAX_MESSAGE: usize = 4 << 20;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The same upstream error text is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// What a `kite` source reports beyond [`FeedHealth`] (`/status` `kite`,
/// `/metrics` `tickcast_kite_*`). Its state and `reconnects` (links lost)
/// are the feed's own.
#[derive(Default)]
pub struct KiteHealth {
    /// Upstream connections open now.
    pub connections_open: AtomicU64,
    /// Most connections (`--kite-upstream-connections`).
    pub connections_max: AtomicU64,
    /// Instruments subscribed upstream now.
    pub subscribed: AtomicU64,
    /// Most instruments: connections × instruments per connection.
    pub capacity: AtomicU64,
    /// Frames (or packets, `unknown_length`) dropped, by [`DecodeError`] kind.
    pub decode_errors: [AtomicU64; DecodeError::NAMES.len()],
    /// Packets for instrument tokens the master does not have.
    pub unknown_tokens: AtomicU64,
    /// Handshakes refused with an HTTP status (403: wrong or expired token).
    pub handshake_refusals: AtomicU64,
    /// Connection attempts that failed otherwise (TCP, TLS, timeout).
    pub connect_failures: AtomicU64,
    /// Links closed after [`STALL`] without a frame.
    pub stalls: AtomicU64,
    /// Order postbacks relayed to `private:USER:orders`.
    pub orders: AtomicU64,
    /// Order postbacks dropped (no user configured, or no room for the channel).
    pub orders_dropped: AtomicU64,
    /// `{"type":"error"}` messages from upstream.
    pub upstream_errors: AtomicU64,
    /// Other text messages, ignored.
    pub text_ignored: AtomicU64,
    /// The newest connection failure or upstream error (empty: none).
    pub last_error: Mutex<String>,
}

impl KiteHealth {
    /// The `kite` object of this feed in `/status`.
    pub fn status(&self) -> Value {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let decode: serde_json::Map<String, Value> =
            DecodeError::NAMES.iter().zip(&self.decode_errors).map(|(n, c)| ((*n).to_string(), json!(l(c)))).collect();
        json!({
            "connections_open": l(&self.connections_open), "connections_max": l(&self.connections_max),
            "instruments_subscribed": l(&self.subscribed), "instruments_capacity": l(&self.capacity),
            "decode_errors": decode, "unknown_tokens": l(&self.unknown_tokens),
            "handshake_refusals": l(&self.handshake_refusals), "connect_failures": l(&self.connect_failures),
            "stalls": l(&self.stalls), "orders": l(&self.orders), "orders_dropped": l(&self.orders_dropped),
            "upstream_errors": l(&self.upstream_errors), "text_ignored": l(&self.text_ignored),
            "last_error": self.last_error.lock().clone(),
        })
    }

    fn error(&self, text: String) {
        *self.last_error.lock() = text;
    }
}

/// Append the `tickcast_kite_*` families for every `kite` feed in `feeds`.
pub fn metrics(out: &mut String, feeds: &[Arc<FeedHealth>]) {
    use std::fmt::Write as _;
    let kites: Vec<(&str, &KiteHealth, &FeedHealth)> =
        feeds.iter().filter_map(|f| f.kite.as_ref().map(|k| (f.name.as_str(), k, &**f))).collect();
    if kites.is_empty() {
        return;
    }
    type Get = fn(&KiteHealth, &FeedHealth) -> u64;
    fn l(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    let families: [(&str, &str, &str, Get); 12] =
        [
            ("connections_open", "gauge", "Upstream Kite connections open", |k, _| l(&k.connections_open)),
            ("connections_max", "gauge", "Most upstream Kite connections", |k, _| l(&k.connections_max)),
            ("instruments_subscribed", "gauge", "Instruments subscribed upstream", |k, _| l(&k.subscribed)),
            ("instruments_capacity", "gauge", "Most instruments the upstream takes", |k, _| l(&k.capacity)),
            ("reconnects_total", "counter", "Upstream links lost (each is reopened)", |_, f| l(&f.reconnects)),
            ("stalls_total", "counter", "Upstream links closed after 3 s without a frame", |k, _| l(&k.stalls)),
            ("handshake_refusals_total", "counter", "Upstream handshakes refused (403: bad token)", |k, _| {
                l(&k.handshake_refusals)
            }),
            (
                "connect_failures_total",
                "counter",
                "Upstream connection attempts that failed (TCP, TLS, timeout)",
                |k, _| l(&k.connect_failures),
            ),
            ("unknown_tokens_total", "counter", "Packets for tokens not in the master", |k, _| l(&k.unknown_tokens)),
            ("orders_total", "counter", "Order postbacks relayed to private:USER:orders", |k, _| l(&k.orders)),
            ("orders_dropped_total", "counter", "Order postbacks dropped (no user configured)", |k, _| {
                l(&k.orders_dropped)
            }),
            ("upstream_errors_total", "counter", "Error messages from upstream", |k, _| l(&k.upstream_errors)),
        ];
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP tickcast_kite_{name} {help}\n# TYPE tickcast_kite_{name} {kind}");
        for (feed, k, f) in &kites {
            let _ = writeln!(out, "tickcast_kite_{name}{{feed=\"{feed}\"}} {}", get(k, f));
        }
    }
    let _ = writeln!(out, "# HELP tickcast_kite_decode_errors_total Frames or packets from upstream dropped, by kind\n# TYPE tickcast_kite_decode_errors_total counter");
    for (feed, k, _) in &kites {
        for (kind, c) in DecodeError::NAMES.iter().zip(&k.decode_errors) {
            let _ = writeln!(out, "tickcast_kite_decode_errors_total{{feed=\"{feed}\",kind=\"{kind}\"}} {}", l(c));
        }
    }
}

/// The requests one connection needs this round, batched: Kite tokens to
/// unsubscribe, to subscribe, and to set to each mode (ltp, quote, full).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// `{"a":"unsubscribe","v":[…]}`.
    pub unsubscribe: Vec<u32>,
    /// `{"a":"subscribe","v":[…]}`.
    pub subscribe: Vec<u32>,
    /// `{"a":"mode","v":["ltp"|"quote"|"full",[…]]}`, by `Mode as usize - 1`.
    pub modes: [Vec<u32>; 3],
}

impl Requests {
    /// Forget everything (keeping the buffers).
    pub fn clear(&mut self) {
        self.unsubscribe.clear();
        self.subscribe.clear();
        self.modes.iter_mut().for_each(Vec::clear);
    }

    /// The messages, in the order they must be sent: unsubscribe first
    /// (room for the new), subscribe, then modes (Kite subscribes in quote).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unsubscribe.is_empty() {
            out.push(wire::request("unsubscribe", None, &self.unsubscribe));
        }
        if !self.subscribe.is_empty() {
            out.push(wire::request("subscribe", None, &self.subscribe));
        }
        for (mode, tokens) in Mode::ALL.iter().zip(&self.modes) {
            if !tokens.is_empty() {
                out.push(wire::request("mode", Some(*mode), tokens));
            }
        }
        out
    }
}

/// Which upstream connection carries which instrument, in which mode: the
/// pure core of following local interest (no I/O).
pub struct Spread {
    /// Most instruments per connection.
    per_conn: usize,
    /// Per slot: the connection it is subscribed on and its mode there.
    placed: Vec<Option<(u8, Mode)>>,
    /// Instruments on each connection.
    load: Vec<usize>,
    /// Scratch: per slot, the mode wanted this round.
    want: Vec<Option<Mode>>,
}

impl Spread {
    /// Nothing subscribed, for `slots` instruments over at most
    /// `connections` (≤ 256) connections of `per_conn` instruments each.
    pub fn new(slots: usize, connections: usize, per_conn: usize) -> Spread {
        assert!((1..=256).contains(&connections), "1 to 256 connections");
        Spread { per_conn, placed: vec![None; slots], load: vec![0; connections], want: vec![None; slots] }
    }

    /// Follow `wanted` (slot, highest mode; [`crate::demand::Demand::wanted`]):
    /// what nobody wants any more is unsubscribed, a changed mode is set,
    /// a new instrument goes to the first connection with room and stays
    /// there. Instruments without a Kite token (`kite_token` 0) are skipped.
    /// Appends to `out[connection]`; returns how many wanted instruments
    /// found no room (none while demand is admitted against the capacity).
    pub fn update(&mut self, wanted: &[(Slot, Mode)], kite_token: impl Fn(Slot) -> u32, out: &mut [Requests]) -> usize {
        self.want.fill(None);
        for &(slot, mode) in wanted {
            if kite_token(slot) != 0 {
                self.want[slot.idx()] = Some(mode);
            }
        }
        // Removals and mode changes first: they make room for the new.
        for (i, (placed, want)) in self.placed.iter_mut().zip(&self.want).enumerate() {
            let Some((c, had)) = *placed else { continue };
            let token = kite_token(Slot(i as u32));
            match want {
                None => {
                    out[usize::from(c)].unsubscribe.push(token);
                    self.load[usize::from(c)] -= 1;
                    *placed = None;
                }
                Some(m) if *m != had => {
                    out[usize::from(c)].modes[*m as usize - 1].push(token);
                    *placed = Some((c, *m));
                }
                Some(_) => {}
            }
        }
        let mut no_room = 0;
        for (i, (placed, want)) in self.placed.iter_mut().zip(&self.want).enumerate() {
            let (None, Some(m)) = (*placed, *want) else { continue };
            let Some(c) = self.load.iter().position(|&n| n < self.per_conn) else {
                no_room += 1;
                continue;
            };
            let token = kite_token(Slot(i as u32));
            out[c].subscribe.push(token);
            out[c].modes[m as usize - 1].push(token);
            self.load[c] += 1;
            *placed = Some((c as u8, m));
        }
        no_room
    }

    /// Everything connection `c` carries, as requests for a fresh link.
    pub fn all_on(&self, c: usize, kite_token: impl Fn(Slot) -> u32, out: &mut Requests) {
        for (i, p) in self.placed.iter().enumerate() {
            if let Some((on, m)) = *p {
                if usize::from(on) == c {
                    let token = kite_token(Slot(i as u32));
                    out.subscribe.push(token);
                    out.modes[m as usize - 1].push(token);
                }
            }
        }
    }

    /// Instruments on connection `c`.
    pub fn load(&self, c: usize) -> usize {
        self.load[c]
    }

    /// Instruments subscribed over all connections.
    pub fn total(&self) -> usize {
        self.load.iter().sum()
    }
}

/// Binary frames → published ticks, sans-IO: each instrument's previous
/// state, onto which each packet is applied.
pub struct Decoder {
    /// Per slot: the newest state (its `seq` the last one published).
    last: Vec<Tick>,
}

impl Decoder {
    /// No state yet, for `registry`'s instruments.
    pub fn new(registry: &Registry) -> Decoder {
        Decoder { last: vec![Tick::default(); registry.len()] }
    }

    /// Decode one binary frame received at `recv_ns` and hand every
    /// updated tick to `publish`; returns how many `publish` took. A frame
    /// whose structure is broken is dropped whole; a packet with an unknown
    /// token or length is dropped alone; each is counted in `health`.
    pub fn frame(
        &mut self,
        frame: &[u8],
        recv_ns: u64,
        registry: &Registry,
        health: &KiteHealth,
        mut publish: impl FnMut(&Tick) -> bool,
    ) -> u64 {
        let count = |e: DecodeError| {
            health.decode_errors[e.index()].fetch_add(1, Ordering::Relaxed);
        };
        let packets = match wire::packets(frame) {
            Ok(p) => p,
            Err(e) => {
                count(e);
                return 0;
            }
        };
        let mut n = 0;
        for p in packets {
            let Some(token) = wire::packet_token(p) else {
                count(DecodeError::UnknownLength);
                continue;
            };
            let Some(slot) = registry.slot_of_kite_token(token) else {
                health.unknown_tokens.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let ins = registry.get(slot);
            let t = &mut self.last[slot.idx()];
            match wire::apply(p, t, ins.price_decimals) {
                Ok(u) => {
                    t.token = ins.token;
                    t.slot = slot.0;
                    t.seq += 1;
                    t.ts_ns = if u.exchange_ts_ns != 0 { u.exchange_ts_ns } else { recv_ns };
                    t.ts_recv_ns = recv_ns;
                    n += u64::from(publish(t));
                }
                Err(e) => count(e),
            }
        }
        n
    }
}

/// A link's byte stream: plain TCP (`kite+ws://`) or TLS (`kite://`).
enum Transport {
    /// `kite+ws://`.
    Plain(TcpStream),
    /// `kite://` (boxed: the TLS state is large).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
enum ConnectError {
    /// The upstream answered the handshake with this HTTP status.
    Refused(u16),
    /// Anything else (resolution, TCP, TLS, timeout), as text.
    Failed(String),
}

/// The TLS settings: the web PKI roots plus the certificates of `ca`.
fn tls_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca {
        let what = || format!("ca={}", path.display());
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).with_context(what)? {
            roots.add(cert.with_context(what)?).with_context(what)?;
            added += 1;
        }
        if added == 0 {
            bail!("{}: no certificate in the file", what());
        }
    }
    // ring, not aws-lc-rs: no cmake or NASM in the build. rustls 0.23.48
    // deprecates it for lacking post-quantum key exchange, which a market
    // data link can do without; classical ECDHE is still negotiated.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Open one link: TCP, TLS when `tls`, the WebSocket handshake; blocking
/// with timeouts, then non-blocking for the poll loop.
fn connect(spec: &KiteSpec, tls: Option<&Arc<ClientConfig>>) -> Result<WebSocket<Transport>, ConnectError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| ConnectError::Failed(format!("{what}: {e}"));
    let host = spec.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, spec.port).to_socket_addrs().map_err(|e| failed("resolving", &e))?;
    let mut last = ConnectError::Failed(format!("{host} has no address"));
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = failed(&format!("connecting to {addr}"), &e),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        s.set_write_timeout(Some(CONNECT_TIMEOUT))
    };
    setup(&tcp).map_err(|e| failed("socket options", &e))?;
    let transport = match tls {
        None => Transport::Plain(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| failed(&format!("server name `{host}`"), &e))?;
            let conn = ClientConnection::new(config.clone(), name).map_err(|e| failed("TLS", &e))?;
            Transport::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    };
    let mut req = spec.url().into_client_request().map_err(|e| failed("request", &e))?;
    req.headers_mut().insert("X-Kite-Version", tungstenite::http::HeaderValue::from_static("3"));
    let config = tungstenite::protocol::WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let ws = match tungstenite::client::client_with_config(req, transport, Some(config)) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            return Err(ConnectError::Refused(resp.status().as_u16()))
        }
        Err(HandshakeError::Failure(e)) => return Err(failed("handshake", &e)),
        Err(HandshakeError::Interrupted(_)) => return Err(ConnectError::Failed("handshake timed out".into())),
    };
    let s = ws.get_ref().tcp();
    s.set_read_timeout(None).and_then(|()| s.set_nonblocking(true)).map_err(|e| failed("socket options", &e))?;
    Ok(ws)
}

/// One upstream connection's state.
struct Link {
    /// The open WebSocket (`None`: down).
    ws: Option<WebSocket<Transport>>,
    /// When the newest frame arrived (or the link opened).
    last_frame: Instant,
    /// Failed attempts since the link was last up.
    attempt: u32,
    /// No attempt before this.
    retry_at: Instant,
    /// The refusal status already logged this streak.
    refused: Option<u16>,
    /// A failure was logged this streak (the rest go to debug).
    failing: bool,
    /// A round stopped before WouldBlock: read again without waiting.
    more: bool,
}

impl Link {
    fn new() -> Link {
        let now = Instant::now();
        Link { ws: None, last_frame: now, attempt: 0, retry_at: now, refused: None, failing: false, more: false }
    }
}

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
            let up = (0..n).all(|c| !self.needed(c) || self.links[c].ws.is_some());
            ctx.health.state.store(if up { STATE_LIVE } else { STATE_CONNECTING }, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::Instrument;

    fn tokens(slots: &[u32]) -> Vec<u32> {
        slots.iter().map(|s| 1000 + s).collect()
    }

    /// Kite token of slot `s`: 1000 + s, except slot 9 (no Kite token).
    fn token(s: Slot) -> u32 {
        if s.0 == 9 {
            0
        } else {
            1000 + s.0
        }
    }

    #[test]
    fn interest_is_spread_over_connections_and_diffed() {
        use Mode::{Depth, Ltp, Quote};
        let req = |unsub: &[u32], sub: &[u32], modes: [&[u32]; 3]| Requests {
            unsubscribe: tokens(unsub),
            subscribe: tokens(sub),
            modes: modes.map(tokens),
        };
        let none = Requests::default();
        // Two connections of two instruments; each round: wanted, then the
        // requests for connection 0 and 1.
        type Round = (&'static [(u32, Mode)], Requests, Requests);
        let rounds: Vec<(&str, Round)> = vec![
            (
                "first instruments fill connection 0",
                (&[(1, Quote), (2, Depth)], req(&[], &[1, 2], [&[], &[1], &[2]]), none.clone()),
            ),
            (
                "a third opens connection 1",
                (&[(1, Quote), (2, Depth), (3, Ltp)], none.clone(), req(&[], &[3], [&[3], &[], &[]])),
            ),
            (
                "a mode change stays put",
                (&[(1, Depth), (2, Depth), (3, Ltp)], req(&[], &[], [&[], &[], &[1]]), none.clone()),
            ),
            (
                "a leaver frees room that the next arrival takes",
                (&[(2, Depth), (3, Ltp), (4, Quote)], req(&[1], &[4], [&[], &[4], &[]]), none.clone()),
            ),
            ("no Kite token: skipped", (&[(2, Depth), (3, Ltp), (4, Quote), (9, Ltp)], none.clone(), none.clone())),
            ("everyone leaves", (&[], req(&[2, 4], &[], [&[], &[], &[]]), req(&[3], &[], [&[], &[], &[]]))),
        ];
        let mut spread = Spread::new(10, 2, 2);
        let mut out = vec![Requests::default(); 2];
        for (what, (wanted, want0, want1)) in rounds {
            let wanted: Vec<(Slot, Mode)> = wanted.iter().map(|&(s, m)| (Slot(s), m)).collect();
            out.iter_mut().for_each(Requests::clear);
            assert_eq!(spread.update(&wanted, token, &mut out), 0, "{what}");
            assert_eq!((&out[0], &out[1]), (&want0, &want1), "{what}");
        }
        assert_eq!(spread.total(), 0);
        // Past capacity: counted, not placed; a reconnect resends one link's share.
        let wanted: Vec<(Slot, Mode)> = (1..=5).map(|s| (Slot(s), Ltp)).collect();
        assert_eq!(spread.update(&wanted, token, &mut out), 1);
        assert_eq!((spread.load(0), spread.load(1)), (2, 2));
        let mut again = Requests::default();
        spread.all_on(1, token, &mut again);
        assert_eq!(again, req(&[], &[3, 4], [&[3, 4], &[], &[]]));
        assert_eq!(
            again.messages(),
            [r#"{"a":"subscribe","v":[1003,1004]}"#, r#"{"a":"mode","v":["ltp",[1003,1004]]}"#]
        );
        let mixed = req(&[7], &[8], [&[], &[8], &[]]);
        assert_eq!(
            mixed.messages(),
            [
                r#"{"a":"unsubscribe","v":[1007]}"#,
                r#"{"a":"subscribe","v":[1008]}"#,
                r#"{"a":"mode","v":["quote",[1008]]}"#
            ]
        );
    }

    fn registry() -> Registry {
        let ins = |token: u32, kite_token: u32| Instrument {
            token,
            kite_token,
            exchange: "NSE".into(),
            symbol: format!("S{token}").into(),
            name: "".into(),
            isin: "".into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: 2,
            ref_price: 0,
        };
        Registry::new(vec![ins(2885, 738561), ins(1594, 408065)]).unwrap()
    }

    fn frame(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut f = (packets.len() as u16).to_be_bytes().to_vec();
        for p in packets {
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(p);
        }
        f
    }

    fn ltp(token: u32, price: u32) -> Vec<u8> {
        [token.to_be_bytes(), price.to_be_bytes()].concat()
    }

    #[test]
    fn frames_decode_onto_the_previous_state_and_publish() {
        let reg = registry();
        let health = KiteHealth::default();
        let mut d = Decoder::new(&reg);
        let mut got = Vec::new();
        let mut run = |d: &mut Decoder, f: &[u8], recv: u64| {
            d.frame(f, recv, &reg, &health, |t| {
                got.push(*t);
                true
            })
        };
        // A quote packet written by the encoder side, then an LTP packet.
        let rel = reg.get(Slot(0)).clone();
        let quote = Tick {
            ltp: 285050,
            volume: 1000,
            open: 282000,
            high: 286000,
            low: 281000,
            close: 281500,
            ..Tick::default()
        };
        let mut q = Vec::new();
        wire::write_packet(&mut q, Mode::Quote, &quote, &rel);
        let f = [&1u16.to_be_bytes()[..], &q].concat();
        assert_eq!(run(&mut d, &f, 100), 1);
        assert_eq!(run(&mut d, &frame(&[ltp(738561, 285100), ltp(408065, 150000)]), 200), 2);
        // A broken frame (count past the end) publishes nothing.
        let mut broken = frame(&[ltp(738561, 1), ltp(738561, 2)]);
        broken.truncate(broken.len() - 1);
        assert_eq!(run(&mut d, &broken, 300), 0);
        // Unknown token and unknown length: dropped alone.
        assert_eq!(run(&mut d, &frame(&[ltp(999, 1), ltp(738561, 1)[..7].to_vec(), ltp(738561, 285200)]), 400), 1);
        assert_eq!(run(&mut d, &[0], 500), 0, "a heartbeat");
        let rel: Vec<&Tick> = got.iter().filter(|t| t.slot == 0).collect();
        assert_eq!(rel.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3], "strictly increasing per instrument");
        assert_eq!(rel.iter().map(|t| t.ltp).collect::<Vec<_>>(), [285050, 285100, 285200]);
        assert!(rel.iter().all(|t| t.token == 2885), "the registry's token");
        assert_eq!(
            (rel[1].volume, rel[1].open, rel[1].ts_ns, rel[1].ts_recv_ns),
            (1000, 282000, 200, 200),
            "LTP keeps the rest"
        );
        let infy: Vec<&Tick> = got.iter().filter(|t| t.slot == 1).collect();
        assert_eq!((infy.len(), infy[0].token, infy[0].seq, infy[0].ltp), (1, 1594, 1, 150000));
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(l(&health.decode_errors[DecodeError::CountPastEnd.index()]), 1);
        assert_eq!(l(&health.decode_errors[DecodeError::UnknownLength.index()]), 1);
        assert_eq!(l(&health.unknown_tokens), 1);
        // A full packet's exchange time becomes ts_ns.
        let mut full = Vec::new();
        let depth = Tick { ltp: 285300, ts_ns: 1_700_000_000_000_000_000, ..quote };
        wire::write_packet(&mut full, Mode::Depth, &depth, reg.get(Slot(0)));
        let mut last = None;
        d.frame(&[&1u16.to_be_bytes()[..], &full].concat(), 600, &reg, &health, |t| {
            last = Some(*t);
            true
        });
        let t = last.unwrap();
        assert_eq!((t.ltp, t.seq, t.ts_ns, t.ts_recv_ns), (285300, 4, 1_700_000_000_000_000_000, 600));
    }
}
