//! Benchmark clients: many WebSocket connections driven from one mio
//! thread each (`--client-threads`), each subscribing to its tokens, timing
//! every delivered tick as `receive time − ts` into an HDR histogram.
//!
//! Works against any server that takes a JSON subscribe message: the
//! subscribe text comes from a template, and a tick's time is found as the
//! `"ts":` field of a JSON frame or at bytes 16..24 of a native rkyv frame.
//! Snapshot frames (sent on subscribe, not caused by the feeder) are skipped.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::metrics::new_histogram;
use crate::tick::now_ns;

/// One connection's job.
pub struct ClientSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path and query (`/stream?format=rkyv`).
    pub path: String,
    /// The subscribe message text.
    pub subscribe: String,
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
    state: State,
    /// Its subscription was acknowledged.
    ready: bool,
    /// Counted in the run's settled count (acknowledged or gone), once.
    settled: bool,
    buf: Vec<u8>,
    spec: ClientSpec,
}

/// A masked client text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = fastrand::u32(..).to_le_bytes();
    let mut out = vec![0x81];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
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

/// Split one server frame off the front of `buf`: (opcode, payload range, total length).
fn server_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
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

/// Run `specs` until `stop`; `ready` counts connections that settled: their
/// subscription was acknowledged, or they are gone. Measured: deliveries
/// with `ts` in `window`.
pub fn run(
    specs: Vec<ClientSpec>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    window: (Arc<AtomicU64>, Arc<AtomicU64>),
) -> io::Result<Measured> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let mut sock = TcpStream::connect(spec.addr)?;
        poll.registry().register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(Conn { sock, state: State::Connecting, ready: false, settled: false, buf: Vec::new(), spec });
    }
    let mut m = Measured {
        latency: new_histogram(),
        per_second: Vec::new(),
        delivered: 0,
        bytes: 0,
        failed: 0,
        acknowledged: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.state == State::Connecting && ev.is_writable() {
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    c.spec.path, c.spec.addr
                );
                if c.sock.write_all(req.as_bytes()).is_err() {
                    gone(c, &mut m.failed, &ready);
                    continue;
                }
                c.state = State::Upgrading;
            }
            if !ev.is_readable() || c.state == State::Done {
                continue;
            }
            loop {
                match c.sock.read(&mut chunk) {
                    Ok(0) => {
                        gone(c, &mut m.failed, &ready);
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone(c, &mut m.failed, &ready);
                        break;
                    }
                }
            }
            let now = now_ns();
            let (from, to) = (window.0.load(Ordering::Relaxed), window.1.load(Ordering::Relaxed));
            if c.state == State::Upgrading {
                let Some(end) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                if !c.buf.starts_with(b"HTTP/1.1 101") {
                    gone(c, &mut m.failed, &ready);
                    continue;
                }
                c.buf.drain(..end + 4);
                if c.sock.write_all(&text_frame(c.spec.subscribe.as_bytes())).is_err() {
                    gone(c, &mut m.failed, &ready);
                    continue;
                }
                c.state = State::Open;
            }
            let mut at = 0;
            while let Some((op, payload, len)) = server_frame(&c.buf[at..]) {
                let p = &c.buf[at + payload.start..at + payload.end];
                match op {
                    0x8 => c.state = State::Done,
                    0x1 if !c.ready && p.windows(7).any(|w| w == b"subscri") => {
                        c.ready = true;
                        settle(c, &ready);
                    }
                    _ => {
                        if let Some(ts) = tick_ts(op, p) {
                            if ts >= from && ts < to {
                                let lat = now.saturating_sub(ts).max(1);
                                m.latency.saturating_record(lat);
                                let sec = ((ts - from) / 1_000_000_000) as usize;
                                if m.per_second.len() <= sec {
                                    m.per_second.resize_with(sec + 1, new_histogram);
                                }
                                m.per_second[sec].saturating_record(lat);
                                m.delivered += 1;
                                m.bytes += p.len() as u64;
                            }
                        }
                    }
                }
                at += len;
            }
            c.buf.drain(..at);
        }
    }
    m.acknowledged = conns.iter().map(|c| c.ready).collect();
    Ok(m)
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
