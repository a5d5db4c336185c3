//! Benchmark clients: many WebSocket connections driven from one mio
//! thread each (`--client-threads`), each subscribing to its tokens, timing
//! every delivered tick as `receive time − ts` into an HDR histogram.
//!
//! Works against any server that takes a JSON subscribe message: the
//! subscribe text comes from a template, and a tick's time is found as the
//! `"ts":` field of a JSON frame or at bytes 16..24 of a native rkyv frame.
//! Snapshot frames (sent on subscribe, not caused by the feeder) are skipped.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::metrics::new_histogram;
use crate::tick::now_ns;
use crate::ws::frame;

/// One connection's job.
pub struct ClientSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Local address to connect from (`None`: the kernel's choice).
    pub source: Option<SocketAddr>,
    /// Request path and query (`/stream?format=rkyv`).
    pub path: String,
    /// The subscribe message text.
    pub subscribe: String,
    /// Kite ticker frames (no subscription acknowledgement; packets, not
    /// one tick a frame).
    pub kite: bool,
    /// `wss://`: the TLS settings to connect with.
    pub tls: Option<super::tls::ClientTls>,
    /// Receive buffer to ask for before connecting (`None`: the kernel's,
    /// which grows to megabytes on loopback).
    pub rcvbuf: Option<usize>,
}

/// What one client thread measured.
pub struct Measured {
    /// Latency of measured deliveries, ns.
    pub latency: Histogram<u64>,
    /// The same deliveries, one histogram per second of `ts` in the window
    /// (for HdrHistogram interval logs).
    pub per_second: Vec<Histogram<u64>>,
    /// Deliveries whose `ts` fell in the window.
    pub delivered: u64,
    /// Payload bytes of those deliveries.
    pub bytes: u64,
    /// Reads that returned data while the window was open.
    pub reads: u64,
    /// Connections that failed or were closed by the server.
    pub failed: usize,
    /// Per connection (in `specs` order): its subscription was acknowledged,
    /// so its ticks count as expected deliveries.
    pub acknowledged: Vec<bool>,
}

#[derive(PartialEq, Eq)]
enum State {
    Connecting,
    Upgrading,
    Open,
    Done,
}

struct Conn {
    sock: TcpStream,
    /// Its TLS connection, for `wss://`.
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
    /// Its subscription was acknowledged.
    ready: bool,
    /// Counted in the run's settled count (acknowledged or gone), once.
    settled: bool,
    /// Received bytes not yet used: a frame (or the upgrade response) cut
    /// off by the end of a read. Empty, and unallocated, most of the time.
    partial: Vec<u8>,
    spec: ClientSpec,
}

/// Default connections per loopback source address: below the ~28k
/// ephemeral ports (32768–60999) one address can connect from.
pub const CLIENTS_PER_SOURCE: usize = 20_000;

/// The source address of client `i` when the clients are spread over `k`
/// loopback addresses 127.0.0.1..=127.0.0.k (port chosen by the kernel).
/// With one address the kernel chooses, as for any other target.
pub fn source_addr(k: usize, i: usize) -> Option<SocketAddr> {
    debug_assert!((1..=254).contains(&k), "127.0.0.1..=127.0.0.254");
    (k > 1).then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % k) as u8)), 0))
}

/// Start a non-blocking connect to `spec.addr`, from `spec.source` and
/// with `spec.rcvbuf` if set.
pub(super) fn connect(spec: &ClientSpec) -> io::Result<TcpStream> {
    /// Linux's errno for "connect started" (`io::ErrorKind::InProgress` is not stable yet).
    const EINPROGRESS: i32 = 115;
    if spec.source.is_none() && spec.rcvbuf.is_none() {
        return TcpStream::connect(spec.addr);
    }
    let sock = socket2::Socket::new(socket2::Domain::for_address(spec.addr), socket2::Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    if let Some(bytes) = spec.rcvbuf {
        sock.set_recv_buffer_size(bytes)?;
    }
    if let Some(source) = spec.source {
        sock.bind(&source.into())?;
    }
    match sock.connect(&spec.addr.into()) {
        Err(e) if e.raw_os_error() != Some(EINPROGRESS) => return Err(e),
        _ => {}
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// The WebSocket upgrade request for `path` at `addr`.
pub(super) fn upgrade_request(path: &str, addr: SocketAddr) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client text frame.
pub(super) fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    frame::append_masked(&mut out, frame::OP_TEXT, true, fastrand::u32(..).to_le_bytes(), payload);
    out
}

/// The source timestamp of a data frame, if it is a (non-snapshot) tick.
pub fn tick_ts(opcode: u8, payload: &[u8]) -> Option<u64> {
    match opcode {
        0x2 if payload.len() >= 24 => {
            // Native rkyv: flags at 5 (bit 0 = snapshot), ts_ns at 16..24.
            (payload[5] & 1 == 0).then(|| u64::from_le_bytes(payload[16..24].try_into().expect("8 bytes")))
        }
        0x1 => {
            let find = |pat: &[u8]| payload.windows(pat.len()).position(|w| w == pat);
            // Typed messages count only as market data (heartbeats and pongs
            // carry a `ts` too); untyped ones (other servers) by their `ts`.
            if find(b"\"type\":").is_some() && find(b"\"type\":\"market_data\"").is_none() {
                return None;
            }
            if find(b"\"snapshot\":true").is_some() {
                return None;
            }
            let at = find(b"\"ts\":")? + 5;
            let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// The scheduled time of a Kite quote or full packet received at `now_ns`:
/// the feeder put it, in µs mod 2³², in the last traded quantity (bytes
/// 8..12), so it is the latest such time at or before `now_ns`. LTP and
/// index packets carry none.
pub fn kite_ts(packet: &[u8], now_ns: u64) -> Option<u64> {
    if packet.len() < crate::kite::QUOTE_LEN || packet.len() == crate::kite::INDEX_FULL_LEN {
        return None;
    }
    let sent = u64::from(u32::from_be_bytes(packet[8..12].try_into().expect("4 bytes")));
    let now_us = now_ns / 1_000;
    let ago = now_us.wrapping_sub(sent) & u64::from(u32::MAX);
    Some(now_us.saturating_sub(ago) * 1_000)
}

/// Split one server frame off the front of `buf`: (opcode, payload range, total length).
pub(super) fn server_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let b1 = *buf.get(1)?;
    let (hl, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize),
        n => (2, n as usize),
    };
    let hl: usize = hl + if b1 & 0x80 != 0 { 4 } else { 0 };
    let end = hl.checked_add(len)?;
    (buf.len() >= end).then_some((buf[0] & 0x0f, hl..end, end))
}

/// Count `c` as settled (acknowledged, or gone before that) once.
fn settle(c: &mut Conn, settled: &AtomicUsize) {
    if !std::mem::replace(&mut c.settled, true) {
        settled.fetch_add(1, Ordering::Relaxed);
    }
}

/// `c` failed or was closed: count it, and settle it so the run does not
/// wait for a subscription that will never be acknowledged.
fn gone(c: &mut Conn, failed: &mut usize, settled: &AtomicUsize) {
    c.state = State::Done;
    *failed += 1;
    settle(c, settled);
}

/// One client thread's counts while it runs (see [`Measured`]).
struct Tally<'a> {
    /// Deliveries with `ts` in `window` are measured.
    window: (u64, u64),
    per_second: Vec<Histogram<u64>>,
    delivered: u64,
    bytes: u64,
    /// Reads that returned data while the window was open.
    reads: u64,
    failed: usize,
    /// The run's count of settled connections.
    settled: &'a AtomicUsize,
}

impl Tally<'_> {
    /// Record one delivery received at `now_ns`.
    fn delivery(&mut self, ts: u64, now_ns: u64, payload_len: usize) {
        if ts < self.window.0 || ts >= self.window.1 {
            return;
        }
        let sec = ((ts - self.window.0) / 1_000_000_000) as usize;
        if self.per_second.len() <= sec {
            self.per_second.resize_with(sec + 1, new_histogram);
        }
        self.per_second[sec].saturating_record(now_ns.saturating_sub(ts).max(1));
        self.delivered += 1;
        self.bytes += payload_len as u64;
    }
}

/// Consume what `c` received (`bytes`, all of it read at `now_ns`): the
/// upgrade response, then whole frames. Returns how many bytes were used;
/// the rest is the start of something still arriving.
fn consume(c: &mut Conn, bytes: &[u8], now_ns: u64, t: &mut Tally) -> usize {
    let mut at = 0;
    if c.state == State::Upgrading {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return 0 };
        if !bytes.starts_with(b"HTTP/1.1 101") || send(c, &text_frame(c.spec.subscribe.as_bytes())).is_err() {
            gone(c, &mut t.failed, t.settled);
            return bytes.len();
        }
        c.state = State::Open;
        at = end + 4;
        if c.spec.kite {
            // Kite acknowledges nothing: subscribed once asked.
            c.ready = true;
            settle(c, t.settled);
        }
    }
    while let Some((op, payload, len)) = server_frame(&bytes[at..]) {
        let p = &bytes[at + payload.start..at + payload.end];
        match op {
            // A close from the server (a slow consumer's 1013, a full
            // server's 1013, shutdown) ends the client: counted, settled.
            0x8 => {
                gone(c, &mut t.failed, t.settled);
                return bytes.len();
            }
            0x1 if !c.ready && p.windows(7).any(|w| w == b"subscri") => {
                c.ready = true;
                settle(c, t.settled);
            }
            0x2 if c.spec.kite => {
                if let Ok(packets) = crate::kite::packets(p) {
                    for packet in packets {
                        if let Some(ts) = kite_ts(packet, now_ns) {
                            t.delivery(ts, now_ns, 2 + packet.len());
                        }
                    }
                }
            }
            _ => {
                if let Some(ts) = tick_ts(op, p) {
                    t.delivery(ts, now_ns, p.len());
                }
            }
        }
        at += len;
    }
    at
}

/// Send `bytes` (small: a request or a subscribe frame) on `c`, through
/// its TLS when it has one.
fn send(c: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    match &mut c.tls {
        None => c.sock.write_all(bytes),
        Some(tls) => {
            tls.writer().write_all(bytes)?;
            flush_tls(tls, &mut c.sock)
        }
    }
}

/// Write what TLS has to send, as far as the socket takes it now (the rest
/// on the next writable event).
fn flush_tls(tls: &mut rustls::ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ciphertext of one read: decrypt it into `plain` (replaced), answer
/// what the handshake needs.
fn decrypt(c: &mut Conn, bytes: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
    let tls = c.tls.as_mut().expect("a TLS connection");
    plain.clear();
    let mut rest = bytes;
    while !rest.is_empty() {
        tls.read_tls(&mut rest)?;
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        let n = state.plaintext_bytes_to_read();
        let at = plain.len();
        plain.resize(at + n, 0);
        tls.reader().read_exact(&mut plain[at..])?;
    }
    flush_tls(tls, &mut c.sock)
}

/// Take the bytes of one read, received at `now_ns`.
fn received(c: &mut Conn, bytes: &[u8], now_ns: u64, t: &mut Tally) {
    if c.partial.is_empty() {
        // The common case: frames are used in place, only a cut-off tail is kept.
        let used = consume(c, bytes, now_ns, t);
        c.partial.extend_from_slice(&bytes[used..]);
    } else {
        let mut buf = std::mem::take(&mut c.partial);
        buf.extend_from_slice(bytes);
        let used = consume(c, &buf, now_ns, t);
        buf.drain(..used);
        c.partial = buf;
    }
}

/// Run `specs` until `stop`; `ready` counts connections that settled: their
/// subscription was acknowledged, or they are gone. Measured: deliveries
/// with `ts` in `window`, also added to `measured_so_far` once per turn
/// (for the progress line).
pub fn run(
    specs: Vec<ClientSpec>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    window: (Arc<AtomicU64>, Arc<AtomicU64>),
    measured_so_far: Arc<AtomicU64>,
) -> io::Result<Measured> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let mut sock = connect(&spec).map_err(|e| {
            let from = spec.source.map_or(String::new(), |s| format!(" from {}", s.ip()));
            io::Error::new(e.kind(), format!("connecting to {}{from}: {e}", spec.addr))
        })?;
        poll.registry().register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let tls = match &spec.tls {
            Some(t) => Some(Box::new(t.connection().map_err(io::Error::other)?)),
            None => None,
        };
        conns.push(Conn {
            sock,
            tls,
            state: State::Connecting,
            ready: false,
            settled: false,
            partial: Vec::new(),
            spec,
        });
    }
    let mut plain = Vec::new();
    let mut t =
        Tally { window: (0, 0), per_second: Vec::new(), delivered: 0, bytes: 0, reads: 0, failed: 0, settled: &ready };
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut shown = 0;
    while !stop.load(Ordering::Relaxed) {
        if t.delivered != shown {
            measured_so_far.fetch_add(t.delivered - shown, Ordering::Relaxed);
            shown = t.delivered;
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        t.window = (window.0.load(Ordering::Relaxed), window.1.load(Ordering::Relaxed));
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.state == State::Connecting && ev.is_writable() {
                if send(c, upgrade_request(&c.spec.path, c.spec.addr).as_bytes()).is_err() {
                    gone(c, &mut t.failed, t.settled);
                    continue;
                }
                c.state = State::Upgrading;
            } else if ev.is_writable() {
                if let Some(tls) = &mut c.tls {
                    if flush_tls(tls, &mut c.sock).is_err() {
                        gone(c, &mut t.failed, t.settled);
                        continue;
                    }
                }
            }
            if !ev.is_readable() {
                continue;
            }
            // Edge-triggered readiness must be drained, but a read that did
            // not fill `chunk` already emptied the socket: data arriving
            // after it raises a new event. Only a close or error (which may
            // have come with the data) is read on to its end.
            let to_the_end = ev.is_read_closed() || ev.is_error();
            while c.state != State::Done {
                let n = match c.sock.read(&mut chunk) {
                    Ok(0) => {
                        gone(c, &mut t.failed, t.settled);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        gone(c, &mut t.failed, t.settled);
                        break;
                    }
                };
                // Everything one read returns was received by now.
                let now = now_ns();
                if (t.window.0..t.window.1).contains(&now) {
                    t.reads += 1;
                }
                if c.tls.is_none() {
                    received(c, &chunk[..n], now, &mut t);
                } else if decrypt(c, &chunk[..n], &mut plain).is_ok() {
                    received(c, &plain, now, &mut t);
                } else {
                    gone(c, &mut t.failed, t.settled);
                    break;
                }
                if n < chunk.len() && !to_the_end {
                    break;
                }
            }
        }
    }
    // Each delivery went into the histogram of its second only; the run's
    // histogram is their sum.
    let mut latency = new_histogram();
    for h in &t.per_second {
        latency.add(h).map_err(|e| io::Error::other(format!("merging histograms: {e:?}")))?;
    }
    Ok(Measured {
        latency,
        per_second: t.per_second,
        delivered: t.delivered,
        bytes: t.bytes,
        reads: t.reads,
        failed: t.failed,
        acknowledged: conns.iter().map(|c| c.ready).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_come_from_json_and_rkyv_frames() {
        let json = br#"{"type":"market_data","token":1,"seq":5,"ts":1763712000123456789,"data":{"ltp":1.5}}"#;
        assert_eq!(tick_ts(0x1, json), Some(1_763_712_000_123_456_789));
        let snap = br#"{"type":"market_data","ts":5,"snapshot":true}"#;
        assert_eq!(tick_ts(0x1, snap), None, "snapshots are not deliveries");
        assert_eq!(tick_ts(0x1, br#"{"type":"pong","ts":7}"#), None, "pongs are not deliveries");
        assert_eq!(
            tick_ts(0x1, br#"{"type":"heartbeat","ts":7,"feeds":[]}"#),
            None,
            "regression: heartbeats were counted"
        );
        assert_eq!(tick_ts(0x1, br#"{"token":1,"ts":9}"#), Some(9), "untyped frames of other servers");
        let mut rkyv = [0u8; 32];
        rkyv[16..24].copy_from_slice(&42u64.to_le_bytes());
        assert_eq!(tick_ts(0x2, &rkyv), Some(42));
        rkyv[5] = 1;
        assert_eq!(tick_ts(0x2, &rkyv), None);
    }

    /// A server frame (unmasked) of `payload`.
    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | op];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn rkyv(ts: u64, snapshot: bool) -> Vec<u8> {
        let mut p = vec![0u8; 200];
        p[5] = u8::from(snapshot);
        p[16..24].copy_from_slice(&ts.to_le_bytes());
        p
    }

    /// A client connected to `listener`, waiting for its upgrade response
    /// (and the server's end of the connection, kept open).
    fn upgrading(listener: &std::net::TcpListener) -> (Conn, std::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let sock = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap());
        let (peer, _) = listener.accept().unwrap();
        let spec = ClientSpec {
            addr,
            source: None,
            path: "/".into(),
            subscribe: "{}".into(),
            kite: false,
            tls: None,
            rcvbuf: None,
        };
        (
            Conn { sock, tls: None, state: State::Upgrading, ready: false, settled: false, partial: Vec::new(), spec },
            peer,
        )
    }

    /// Counts for ticks scheduled in [1 s, 3 s).
    fn tally(settled: &AtomicUsize) -> Tally<'_> {
        Tally {
            window: (1_000_000_000, 3_000_000_000),
            per_second: Vec::new(),
            delivered: 0,
            bytes: 0,
            reads: 0,
            failed: 0,
            settled,
        }
    }

    #[test]
    fn every_frame_counts_once_however_reads_cut_the_stream() {
        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend(frame(0x1, br#"{"type":"subscribed","tokens":[1]}"#));
        stream.extend(frame(0x2, &rkyv(1_500_000_000, true)));
        for ts in [1_000_000_000, 1_200_000_000, 2_100_000_000, 9_000_000_000] {
            stream.extend(frame(0x2, &rkyv(ts, false)));
        }
        stream.extend(frame(0x1, br#"{"type":"market_data","token":1,"ts":1700000000}"#));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for cuts in [vec![], vec![1], vec![40, 41, 300], (1..stream.len()).step_by(7).collect::<Vec<_>>()] {
            let (mut c, _peer) = upgrading(&listener);
            let settled = AtomicUsize::new(0);
            let mut t = tally(&settled);
            let mut from = 0;
            for to in cuts.iter().copied().chain([stream.len()]) {
                received(&mut c, &stream[from..to], 3_000_000_000, &mut t);
                from = to;
            }
            assert!(c.state == State::Open && c.ready && c.partial.is_empty(), "cuts {cuts:?}");
            assert_eq!(settled.load(Ordering::Relaxed), 1);
            // In the window: the three rkyv ticks before 3 s and the JSON one;
            // not the snapshot, not the one at 9 s.
            assert_eq!((t.delivered, t.failed), (4, 0), "cuts {cuts:?}");
            let counts: Vec<u64> = t.per_second.iter().map(Histogram::len).collect();
            assert_eq!(counts, [3, 1], "by second of ts, cuts {cuts:?}");
        }
    }

    /// A close from the server (e.g. 1013 for a slow consumer) ends the
    /// client, counted as failed and settled, and nothing after it counts.
    #[test]
    fn a_close_from_the_server_is_a_failed_client() {
        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        stream.extend(frame(0x2, &rkyv(1_100_000_000, false)));
        stream.extend(frame(0x8, &1013u16.to_be_bytes()));
        stream.extend(frame(0x2, &rkyv(1_200_000_000, false)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, _peer) = upgrading(&listener);
        let settled = AtomicUsize::new(0);
        let mut t = tally(&settled);
        received(&mut c, &stream, 3_000_000_000, &mut t);
        assert!(c.state == State::Done && c.settled, "closed and settled");
        assert_eq!((t.failed, t.delivered, settled.load(Ordering::Relaxed)), (1, 1, 1));
    }

    #[test]
    fn clients_spread_round_robin_over_loopback_sources() {
        assert_eq!(source_addr(1, 7), None, "one address: the kernel's choice");
        let ips: Vec<String> = (0..5).map(|i| source_addr(3, i).unwrap().to_string()).collect();
        assert_eq!(ips, ["127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0", "127.0.0.1:0", "127.0.0.2:0"]);
        assert_eq!(source_addr(254, 253).unwrap().ip().to_string(), "127.0.0.254");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = ClientSpec {
            addr,
            source: source_addr(3, 2),
            path: "/".into(),
            subscribe: String::new(),
            kite: false,
            tls: None,
            rcvbuf: None,
        };
        let _sock = connect(&spec).unwrap();
        let (_peer, from) = listener.accept().unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.3", "the connection comes from its source address");
    }

    /// The scheduled time comes back from a quote packet's last traded
    /// quantity (µs mod 2³²), across the counter's wrap; LTP packets carry none.
    #[test]
    fn kite_times_come_from_the_last_traded_quantity() {
        let sent_ns: u64 = 1_763_712_000_123_456_000;
        let mut quote = vec![0u8; crate::kite::QUOTE_LEN];
        quote[8..12].copy_from_slice(&((sent_ns / 1_000) as u32).to_be_bytes());
        for later_us in [0, 250, 70_000_000] {
            assert_eq!(kite_ts(&quote, sent_ns + later_us * 1_000 + 999), Some(sent_ns), "{later_us} µs later");
        }
        let wrap = (sent_ns / 1_000) | u64::from(u32::MAX); // the last µs before the counter wraps
        quote[8..12].copy_from_slice(&(wrap as u32).to_be_bytes());
        assert_eq!(kite_ts(&quote, (wrap + 5) * 1_000), Some(wrap * 1_000));
        assert_eq!(kite_ts(&[0u8; crate::kite::LTP_LEN], sent_ns), None);
        assert_eq!(kite_ts(&[0u8; crate::kite::INDEX_FULL_LEN], sent_ns), None);
    }

    #[test]
    fn server_frames_split_at_their_lengths() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x82, 126, 0, 200];
        buf.extend_from_slice(&[7; 200]);
        let (op, p, n) = server_frame(&buf).unwrap();
        assert_eq!((op, &buf[p], n), (1, &b"abc"[..], 5));
        let (op, p, n) = server_frame(&buf[5..]).unwrap();
        assert_eq!((op, p.len(), n), (2, 200, 204));
        assert!(server_frame(&buf[5..100]).is_none());
    }
}
