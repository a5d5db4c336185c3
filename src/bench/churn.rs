//! `tickcast bench --churn`: the soak load. A few hundred clients join and
//! leave all the time, some read slowly, and every delivered tick is checked
//! against its instrument's sequence, so loss is counted tick by tick rather
//! than inferred from totals (which a changing population makes unknowable).
//!
//! ```text
//!  feeder ──TCF1/UDP──► server(s) ──ws, json──► anchors: lossless, every token, the whole run
//!                                          └──► churners (one mio thread with the anchors):
//!                                               lossless | conflate | slow conflate,
//!                                               each lives LIFE, leaves (close frame or RST),
//!                                               and a fresh one takes its slot
//! ```
//!
//! The feeder numbers each token's ticks 1, 2, 3…, and the server passes
//! the number on as `seq`. A client whose token jumps from `a` to `b`
//! missed `a+1..b-1`; each such miss is
//! - **reported** when the frame after it is marked `conflated` and a `gap`
//!   notice named exactly that range (a conflate client that fell behind);
//! - **upstream** when the anchors missed the same ticks: the server never
//!   had them (a Redis outage between an origin and this edge). The anchors
//!   are judged the same way: what they miss must add up to the edge's own
//!   `packet_gaps`, which the soak script checks;
//! - **lost** otherwise. A lossless client must lose nothing, a conflate
//!   client nothing it was not told about.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use super::clients::{connect, server_frame, text_frame, upgrade_request, ClientSpec};
use crate::tick::now_ns;

/// A slow reader reads what is there for [`SLOW_READS_NS`], then stalls
/// (reads nothing) this long, and again: a client whose process pauses.
const SLOW_STALL_NS: u64 = 4_000_000_000;
const SLOW_READS_NS: u64 = 1_000_000_000;
/// How often a slow reader's socket is looked at.
const SLOW_EVERY: Duration = Duration::from_millis(100);
/// A slow reader's receive buffer, so the server's out-buffer (not the
/// kernel's) holds what it has not read.
const SLOW_RCVBUF: usize = 4096;
/// Longest a leaving client waits for the server's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Longest a left slot stays empty before a new client takes it, ms.
const REJOIN_MS: u64 = 500;
/// Misses kept for checking against the anchors; more are counted as lost
/// without looking (a server that loses this much has failed anyway).
const MAX_MISSES: usize = 1_000_000;

/// How a client subscribes and reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Lossless, every token of its share, the whole run: the witnesses.
    Anchor,
    /// Lossless, joins and leaves.
    Lossless,
    /// Conflate (the default delivery), joins and leaves.
    Conflate,
    /// Conflate, every token, stalls and catches up in turn (see
    /// [`SLOW_STALL_NS`]), joins and leaves. Every token, so that a stall
    /// outgrows the kernel's socket buffers (megabytes on loopback) and the
    /// server's out-buffer within seconds and the server must conflate.
    Slow,
}

impl Class {
    const ALL: [Class; 4] = [Class::Anchor, Class::Lossless, Class::Conflate, Class::Slow];

    fn name(self) -> &'static str {
        match self {
            Class::Anchor => "anchor",
            Class::Lossless => "lossless",
            Class::Conflate => "conflate",
            Class::Slow => "slow",
        }
    }

    /// The class of churning slot `i` of `n`: the first `slow_pct`% slow,
    /// the next `lossless_pct`% lossless, the rest conflate.
    pub fn of_slot(i: usize, n: usize, slow_pct: usize, lossless_pct: usize) -> Class {
        let pct = i * 100 / n.max(1);
        if pct < slow_pct {
            Class::Slow
        } else if pct < slow_pct + lossless_pct {
            Class::Lossless
        } else {
            Class::Conflate
        }
    }
}

/// What the run is asked to do.
pub struct Plan {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path and query (`/stream?format=json`).
    pub path: String,
    /// The tokens, in the feeder's order (index `i` here is index `i` there).
    pub tokens: Vec<u32>,
    /// Churning client slots.
    pub clients: usize,
    /// Tokens each churner subscribes to.
    pub subs: usize,
    /// Anchors; the tokens are dealt out among them.
    pub anchors: usize,
    /// A churner's lifetime is uniform in this range, ns.
    pub life_ns: (u64, u64),
    /// Percent of churning slots that read slowly.
    pub slow_pct: usize,
    /// Percent of churning slots that subscribe lossless.
    pub lossless_pct: usize,
    /// RNG seed.
    pub seed: u64,
}

/// Per class counts.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ClassTally {
    /// Connections opened.
    pub joined: u64,
    /// Connections whose subscription was acknowledged.
    pub subscribed: u64,
    /// Live ticks received.
    pub ticks: u64,
    /// Snapshot frames received.
    pub snapshots: u64,
    /// Jumps reported by a gap notice and a `conflated` frame.
    pub reported_gaps: u64,
    /// Ticks those jumps skipped.
    pub reported_ticks: u64,
    /// Ticks missed that the anchors missed too (never reached the server).
    pub upstream_ticks: u64,
    /// Ticks missed without a report that the anchors got: loss.
    pub lost_ticks: u64,
    /// Frames marked `conflated` without a matching gap notice.
    pub unnoticed: u64,
    /// Ticks whose `seq` was not above the one before (duplicates, reordering).
    pub out_of_order: u64,
    /// Closes by the server (any code), or connections that failed.
    pub server_closed: u64,
}

/// A jump checked against the anchors at the end.
#[derive(Clone, Copy, Debug)]
struct Miss {
    class: Class,
    token: usize,
    /// First and last seq missed.
    from: u64,
    to: u64,
}

/// The sequence accounting, sans-IO: frames in, tallies out.
pub struct Checker {
    /// Token number → index into the plan's tokens (`u32::MAX`: not ours).
    index: Vec<u32>,
    tally: [ClassTally; 4],
    /// Unreported misses, for checking at the end.
    misses: Vec<Miss>,
    /// Misses past [`MAX_MISSES`], counted lost unexamined.
    overflow_ticks: u64,
    /// Per token, the seq ranges the anchors missed.
    holes: Vec<Vec<(u64, u64)>>,
    /// Server close codes seen (code, count).
    closes: Vec<(u16, u64)>,
}

/// One connection's sequence state.
pub struct Seqs {
    class: Class,
    /// Last seq per token index (0: none yet).
    last: Vec<u64>,
    /// Gap notices not yet matched by a conflated frame: (token index, from, to).
    notices: Vec<(usize, u64, u64)>,
}

/// The unsigned integer after `key` in `payload`, if any.
pub fn field_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

fn contains(payload: &[u8], pat: &[u8]) -> bool {
    payload.windows(pat.len()).any(|w| w == pat)
}

impl Checker {
    /// A checker for `tokens` (the plan's, in order).
    pub fn new(tokens: &[u32]) -> Checker {
        let max = tokens.iter().copied().max().unwrap_or(0) as usize;
        let mut index = vec![u32::MAX; max + 1];
        for (i, &t) in tokens.iter().enumerate() {
            index[t as usize] = i as u32;
        }
        Checker {
            index,
            tally: [ClassTally::default(); 4],
            misses: Vec::new(),
            overflow_ticks: 0,
            holes: vec![Vec::new(); tokens.len()],
            closes: Vec::new(),
        }
    }

    /// Fresh state for a new connection of `class`.
    pub fn seqs(&self, class: Class) -> Seqs {
        Seqs { class, last: vec![0; self.holes.len()], notices: Vec::new() }
    }

    fn tally(&mut self, class: Class) -> &mut ClassTally {
        &mut self.tally[class as usize]
    }

    fn token_index(&self, payload: &[u8]) -> Option<usize> {
        let t = field_u64(payload, b"\"token\":")?;
        self.index.get(t as usize).filter(|&&i| i != u32::MAX).map(|&i| i as usize)
    }

    /// A server close of a `class` client with `code` (0: no code, or the
    /// connection failed).
    pub fn closed_by_server(&mut self, class: Class, code: u16) {
        self.tally(class).server_closed += 1;
        match self.closes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.closes.push((code, 1)),
        }
    }

    /// One text frame from the server to `s`.
    pub fn text(&mut self, s: &mut Seqs, payload: &[u8]) {
        if payload.starts_with(b"{\"type\":\"gap\"") {
            if let (Some(i), Some(from), Some(to)) =
                (self.token_index(payload), field_u64(payload, b"\"from_seq\":"), field_u64(payload, b"\"to_seq\":"))
            {
                s.notices.push((i, from, to));
            }
            return;
        }
        if !payload.starts_with(b"{\"type\":\"market_data\"") {
            return;
        }
        let (Some(i), Some(seq)) = (self.token_index(payload), field_u64(payload, b"\"seq\":")) else { return };
        let class = s.class;
        if contains(payload, b"\"snapshot\":true") {
            self.tally(class).snapshots += 1;
            s.last[i] = s.last[i].max(seq);
            return;
        }
        self.tally(class).ticks += 1;
        let last = std::mem::replace(&mut s.last[i], seq);
        if last != 0 && seq <= last {
            self.tally(class).out_of_order += 1;
            s.last[i] = last;
            return;
        }
        if contains(payload, b"\"conflated\":true") {
            if last == 0 || seq == last + 1 {
                return;
            }
            // Notices travel on the control lane, ahead of data frames
            // queued before them: match by range, not by arrival order.
            let (from, to) = (last + 1, seq - 1);
            let notice = s.notices.iter().position(|&n| n == (i, from, to)).map(|k| s.notices.swap_remove(k));
            let t = self.tally(class);
            if notice.is_some() {
                t.reported_gaps += 1;
                t.reported_ticks += to - from + 1;
            } else {
                t.unnoticed += 1;
            }
            return;
        }
        if last == 0 || seq == last + 1 {
            return;
        }
        let (from, to) = (last + 1, seq - 1);
        if class == Class::Anchor {
            self.holes[i].push((from, to));
        } else if self.misses.len() < MAX_MISSES {
            self.misses.push(Miss { class, token: i, from, to });
        } else {
            self.overflow_ticks += to - from + 1;
        }
    }

    /// Judge every miss against the anchors' holes: the part the anchors
    /// missed too is upstream, the rest lost. Returns the per class tallies.
    pub fn finish(&mut self) -> [ClassTally; 4] {
        for h in &mut self.holes {
            h.sort_unstable();
        }
        for m in std::mem::take(&mut self.misses) {
            let covered: u64 = self.holes[m.token]
                .iter()
                .map(|&(a, b)| b.min(m.to).saturating_sub(a.max(m.from)) + u64::from(a.max(m.from) <= b.min(m.to)))
                .sum();
            let t = self.tally(m.class);
            t.upstream_ticks += covered;
            t.lost_ticks += (m.to - m.from + 1) - covered;
        }
        let anchor_missed: u64 = self.holes.iter().flatten().map(|&(a, b)| b - a + 1).sum();
        self.tally(Class::Anchor).upstream_ticks = anchor_missed;
        self.tally(Class::Lossless).lost_ticks += self.overflow_ticks;
        self.tally
    }
}

#[derive(PartialEq, Eq, Debug)]
enum State {
    Connecting,
    Upgrading,
    Open,
    /// Sent a close frame; waiting for the server's (or EOF) until the deadline.
    Closing(u64),
}

struct Conn {
    sock: TcpStream,
    state: State,
    seqs: Seqs,
    subscribe: String,
    /// When it joined, ns.
    joined_at: u64,
    /// When it leaves, ns (anchors: never).
    leave_at: u64,
    /// Unused received bytes (a frame cut by the end of a read).
    partial: Vec<u8>,
}

/// What the run saw.
pub struct Outcome {
    /// Per class, in [`Class::ALL`] order.
    pub tally: [ClassTally; 4],
    /// Server close codes (0: failed or closed without a code) and counts.
    pub closes: Vec<(u16, u64)>,
    /// Churners that left by a close frame, and by a reset.
    pub left_close: u64,
    pub left_reset: u64,
}

impl Outcome {
    /// Deliveries: live ticks and snapshots.
    pub fn deliveries(&self) -> u64 {
        self.tally.iter().map(|t| t.ticks + t.snapshots).sum()
    }

    /// Ticks lost by lossless clients (anchors included), and unreported
    /// misses of the others (lost, or marked conflated without a notice).
    pub fn failures(&self) -> (u64, u64) {
        let [a, l, c, s] = self.tally;
        (a.lost_ticks + l.lost_ticks, c.lost_ticks + s.lost_ticks + c.unnoticed + s.unnoticed)
    }

    /// The outcome as JSON.
    pub fn json(&self) -> Value {
        let classes: serde_json::Map<String, Value> = Class::ALL
            .iter()
            .zip(&self.tally)
            .map(|(c, t)| {
                let v = json!({
                    "joined": t.joined, "subscribed": t.subscribed, "ticks": t.ticks, "snapshots": t.snapshots,
                    "reported_gaps": t.reported_gaps, "reported_ticks": t.reported_ticks,
                    "upstream_ticks": t.upstream_ticks, "lost_ticks": t.lost_ticks,
                    "unnoticed": t.unnoticed, "out_of_order": t.out_of_order, "server_closed": t.server_closed,
                });
                (c.name().to_string(), v)
            })
            .collect();
        let (lossless_lost, unreported) = self.failures();
        json!({
            "deliveries": self.deliveries(),
            "left_close": self.left_close,
            "left_reset": self.left_reset,
            "server_closes": self.closes.iter().map(|(c, n)| json!({"code": c, "count": n})).collect::<Vec<_>>(),
            "classes": classes,
            "lossless_lost_ticks": lossless_lost,
            "unreported_misses": unreported,
        })
    }
}

/// Open a connection for `spec` and register it as `token`.
fn join(poll: &Poll, spec: &ClientSpec, token: usize) -> io::Result<TcpStream> {
    let mut sock = connect(spec)?;
    poll.registry().register(&mut sock, Token(token), Interest::READABLE | Interest::WRITABLE)?;
    Ok(sock)
}

/// A masked close frame with code 1000.
fn close_frame(mask: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(8);
    crate::ws::frame::append_masked(
        &mut f,
        crate::ws::frame::OP_CLOSE,
        true,
        mask.to_le_bytes(),
        &1000u16.to_be_bytes(),
    );
    f
}

/// The subscribe message for `tokens` with `delivery`.
fn subscribe_text(tokens: &[u32], delivery: &str) -> String {
    json!({"action": "subscribe", "tokens": tokens, "mode": "ltp", "delivery": delivery}).to_string()
}

/// Use the frames in `bytes`; returns how many bytes were used, or `None`
/// when the server closed (with the code, 0 if none).
fn consume(c: &mut Conn, bytes: &[u8], check: &mut Checker) -> Result<usize, u16> {
    let mut at = 0;
    if c.state == State::Upgrading {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(0) };
        if !bytes.starts_with(b"HTTP/1.1 101") || c.sock.write_all(&text_frame(c.subscribe.as_bytes())).is_err() {
            return Err(0);
        }
        c.state = State::Open;
        at = end + 4;
    }
    while let Some((op, payload, len)) = server_frame(&bytes[at..]) {
        let p = &bytes[at + payload.start..at + payload.end];
        match op {
            0x8 => return Err(p.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))),
            0x1 if matches!(c.state, State::Closing(_)) => {}
            0x1 if p.starts_with(b"{\"type\":\"subscription_response\"") => {
                check.tally(c.seqs.class).subscribed += 1;
            }
            0x1 => check.text(&mut c.seqs, p),
            _ => {}
        }
        at += len;
    }
    Ok(at)
}

/// Read from `c` until it would block; returns false when the connection
/// is over (server close, EOF, error).
fn read(c: &mut Conn, chunk: &mut [u8], check: &mut Checker) -> bool {
    loop {
        let n = match c.sock.read(chunk) {
            Ok(0) => {
                if !matches!(c.state, State::Closing(_)) {
                    check.closed_by_server(c.seqs.class, 0);
                }
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                check.closed_by_server(c.seqs.class, 0);
                return false;
            }
        };
        let mut buf = std::mem::take(&mut c.partial);
        buf.extend_from_slice(&chunk[..n]);
        match consume(c, &buf, check) {
            Ok(used) => {
                buf.drain(..used);
                c.partial = buf;
            }
            Err(code) => {
                if !matches!(c.state, State::Closing(_)) {
                    check.closed_by_server(c.seqs.class, code);
                }
                return false;
            }
        }
    }
}

/// Run the churn until `stop`, then close every connection.
///
/// # Errors
/// The poller cannot be created, or an anchor cannot connect.
pub fn run(plan: &Plan, stop: &AtomicBool) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut check = Checker::new(&plan.tokens);
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let anchors = plan.anchors.max(1);
    let slots = anchors + plan.clients;
    let mut conns: Vec<Option<Conn>> = (0..slots).map(|_| None).collect();
    let mut rejoin_at = vec![0u64; slots];
    let (mut left_close, mut left_reset) = (0u64, 0u64);
    let class_of = |slot: usize| {
        if slot < anchors {
            Class::Anchor
        } else {
            Class::of_slot(slot - anchors, plan.clients, plan.slow_pct, plan.lossless_pct)
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut next_slow = now_ns();
    let spec = |subscribe: String, class: Class| ClientSpec {
        addr: plan.addr,
        source: None,
        path: plan.path.clone(),
        subscribe,
        kite: false,
        tls: None,
        rcvbuf: (class == Class::Slow).then_some(SLOW_RCVBUF),
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = now_ns();
        // Joins and leaves.
        for slot in 0..slots {
            let class = class_of(slot);
            let Some(c) = conns[slot].as_mut() else {
                if stopping || now < rejoin_at[slot] {
                    continue;
                }
                let (tokens, leave_at, delivery) = if class == Class::Anchor {
                    let mine: Vec<u32> = plan.tokens.iter().skip(slot).step_by(anchors).copied().collect();
                    (mine, u64::MAX, "lossless")
                } else if class == Class::Slow {
                    let life = rng.u64(plan.life_ns.0..=plan.life_ns.1.max(plan.life_ns.0));
                    (plan.tokens.clone(), now + life, "conflate")
                } else {
                    let mut idx: Vec<usize> = (0..plan.tokens.len()).collect();
                    rng.shuffle(&mut idx);
                    let mine = idx[..plan.subs.min(idx.len())].iter().map(|&i| plan.tokens[i]).collect();
                    let life = rng.u64(plan.life_ns.0..=plan.life_ns.1.max(plan.life_ns.0));
                    (mine, now + life, if class == Class::Lossless { "lossless" } else { "conflate" })
                };
                let subscribe = subscribe_text(&tokens, delivery);
                check.tally(class).joined += 1;
                match join(&poll, &spec(subscribe.clone(), class), slot) {
                    Ok(sock) => {
                        let seqs = check.seqs(class);
                        conns[slot] = Some(Conn {
                            sock,
                            state: State::Connecting,
                            seqs,
                            subscribe,
                            joined_at: now,
                            leave_at,
                            partial: Vec::new(),
                        });
                    }
                    Err(e) if class == Class::Anchor => return Err(e),
                    Err(_) => {
                        check.closed_by_server(class, 0);
                        rejoin_at[slot] = now + rng.u64(0..=REJOIN_MS) * 1_000_000;
                    }
                }
                continue;
            };
            let drop_it = match c.state {
                State::Open if stopping || now >= c.leave_at => {
                    if rng.bool() {
                        // A reset: SO_LINGER 0, then close.
                        let _ = socket2::SockRef::from(&c.sock).set_linger(Some(Duration::ZERO));
                        left_reset += 1;
                        true
                    } else {
                        let _ = c.sock.write_all(&close_frame(rng.u32(..)));
                        c.state = State::Closing(now + CLOSE_WAIT.as_nanos() as u64);
                        left_close += 1;
                        false
                    }
                }
                State::Connecting | State::Upgrading => stopping,
                State::Closing(until) => now >= until,
                State::Open => false,
            };
            if drop_it {
                conns[slot] = None;
                rejoin_at[slot] = now + rng.u64(0..=REJOIN_MS) * 1_000_000;
            }
        }
        if stopping && conns.iter().all(Option::is_none) {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        for ev in events.iter() {
            let slot = ev.token().0;
            let Some(c) = conns[slot].as_mut() else { continue };
            if c.state == State::Connecting && ev.is_writable() {
                if c.sock.write_all(upgrade_request(&plan.path, plan.addr).as_bytes()).is_err() {
                    check.closed_by_server(c.seqs.class, 0);
                    conns[slot] = None;
                    rejoin_at[slot] = now_ns() + rng.u64(0..=REJOIN_MS) * 1_000_000;
                    continue;
                }
                c.state = State::Upgrading;
            }
            // Slow readers read on their own clock, not on readiness.
            if !ev.is_readable() || (c.seqs.class == Class::Slow && !ev.is_read_closed() && !ev.is_error()) {
                continue;
            }
            if !read(c, &mut chunk, &mut check) {
                conns[slot] = None;
                rejoin_at[slot] = now_ns() + rng.u64(0..=REJOIN_MS) * 1_000_000;
            }
        }
        if now_ns() >= next_slow {
            next_slow = now_ns() + SLOW_EVERY.as_nanos() as u64;
            for slot in 0..slots {
                let Some(c) = conns[slot].as_mut().filter(|c| c.seqs.class == Class::Slow) else { continue };
                let stalled = (now_ns() - c.joined_at) % (SLOW_STALL_NS + SLOW_READS_NS) >= SLOW_READS_NS;
                if c.state != State::Connecting && !stalled && !read(c, &mut chunk, &mut check) {
                    conns[slot] = None;
                    rejoin_at[slot] = now_ns() + rng.u64(0..=REJOIN_MS) * 1_000_000;
                }
            }
        }
    }
    let tally = check.finish();
    Ok(Outcome { tally, closes: check.closes.clone(), left_close, left_reset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(token: u32, seq: u64, marks: &str) -> Vec<u8> {
        format!(r#"{{"type":"market_data","token":{token},"symbol":"S","exchange":"NSE","mode":1,"seq":{seq},"ts":5{marks},"data":{{"ltp":1.5}}}}"#)
            .into_bytes()
    }

    fn gap(token: u32, from: u64, to: u64) -> Vec<u8> {
        format!(r#"{{"type":"gap","token":{token},"from_seq":{from},"to_seq":{to}}}"#).into_bytes()
    }

    #[test]
    fn fields_are_read_by_key() {
        let t = tick(2885, 1042, "");
        assert_eq!(field_u64(&t, b"\"token\":"), Some(2885));
        assert_eq!(field_u64(&t, b"\"seq\":"), Some(1042));
        assert_eq!(field_u64(&t, b"\"oi\":"), None);
    }

    /// A conflate client told of its gap: reported. One skipped silently:
    /// lost unless the anchors missed the same ticks (upstream).
    #[test]
    fn misses_are_reported_upstream_or_lost() {
        let mut ck = Checker::new(&[7, 8]);
        let mut anchor = ck.seqs(Class::Anchor);
        let mut conf = ck.seqs(Class::Conflate);
        let mut lossless = ck.seqs(Class::Lossless);
        ck.text(&mut conf, &tick(7, 10, r#","snapshot":true"#));
        // The notice overtakes a frame queued before it (control lane).
        ck.text(&mut conf, &gap(7, 12, 20));
        ck.text(&mut conf, &tick(7, 11, ""));
        ck.text(&mut conf, &tick(7, 21, r#","conflated":true"#));
        // Upstream: the anchor misses 23..=25 too.
        for s in [21, 22, 26, 27] {
            ck.text(&mut anchor, &tick(7, s, ""));
        }
        ck.text(&mut lossless, &tick(7, 22, ""));
        ck.text(&mut lossless, &tick(7, 26, ""));
        // Lost: 28..=29 on token 8 reached the anchor, not this client.
        ck.text(&mut lossless, &tick(8, 27, ""));
        ck.text(&mut lossless, &tick(8, 30, ""));
        ck.text(&mut anchor, &tick(8, 27, ""));
        for s in 28..=30 {
            ck.text(&mut anchor, &tick(8, s, ""));
        }
        // A conflated frame with no notice, and a duplicate.
        ck.text(&mut conf, &tick(7, 25, r#","conflated":true"#));
        ck.text(&mut conf, &tick(7, 25, ""));
        let [a, l, c, _] = ck.finish();
        assert_eq!((a.ticks, a.upstream_ticks, a.lost_ticks), (8, 3, 0));
        assert_eq!((l.ticks, l.upstream_ticks, l.lost_ticks), (4, 3, 2));
        assert_eq!((c.snapshots, c.ticks, c.reported_gaps, c.reported_ticks), (1, 4, 1, 9));
        assert_eq!((c.unnoticed, c.out_of_order, c.lost_ticks), (1, 1, 0));
    }

    /// A miss that only partly overlaps the anchors' holes is split.
    #[test]
    fn a_miss_is_upstream_only_where_the_anchors_missed_it() {
        let mut ck = Checker::new(&[1]);
        let mut anchor = ck.seqs(Class::Anchor);
        let mut slow = ck.seqs(Class::Slow);
        for s in [1, 5, 6, 9] {
            ck.text(&mut anchor, &tick(1, s, "")); // holes 2..=4, 7..=8
        }
        ck.text(&mut slow, &tick(1, 3, r#","snapshot":true"#));
        ck.text(&mut slow, &tick(1, 9, "")); // missed 4..=8: 4, 7, 8 upstream; 5, 6 lost
        let [_, _, _, s] = ck.finish();
        assert_eq!((s.upstream_ticks, s.lost_ticks), (3, 2));
    }

    #[test]
    fn slots_are_classed_by_percent() {
        let classes: Vec<Class> = (0..10).map(|i| Class::of_slot(i, 10, 20, 30)).collect();
        use Class::*;
        assert_eq!(
            classes,
            [Slow, Slow, Lossless, Lossless, Lossless, Conflate, Conflate, Conflate, Conflate, Conflate]
        );
    }
}
