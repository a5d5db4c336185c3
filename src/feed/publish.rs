//! `--publish-listen ADDR`: co-located strategy processes publish
//! newline-delimited JSON over TCP, parsed with simd-json:
//!
//! ```json
//! {"channel":"signals","data":{"symbol":"RELIANCE","side":"buy"}}
//! {"tick":{"token":2885,"ltp":2850.5,"volume":1500000,"bid":2850.45,"ask":2850.55}}
//! ```
//!
//! A tick line updates only the fields it names (prices in rupees, scaled by
//! the instrument's `price_decimals`); `seq` and `ts` default to the next
//! sequence number and now. A bad line gets `{"error":…,"line":N}` back and
//! the connection stays: the publisher's other lines are not lost.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::listen::{self, Listening};
use super::{read_stream, FeedCtx, Source};
use crate::instrument::Registry;
use crate::tick::{now_ns, Tick, FLAG_OHLC, FLAG_OI, FLAG_QUOTE};

/// Longest line accepted.
const MAX_LINE: usize = 1 << 20;
/// Error replies kept for a publisher that does not read them.
const MAX_REPLY: usize = 64 * 1024;

/// One connected publisher: its line buffer and its error replies.
pub(crate) struct Publisher {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    lines: u64,
    /// Skipping the rest of an over-long line.
    skipping: bool,
}

/// The publish port source.
pub struct PublishPort {
    listener: TcpListener,
    addr: SocketAddr,
    state: Vec<Tick>,
}

impl PublishPort {
    /// Listen on `addr`.
    ///
    /// # Errors
    /// Bind failures, naming the address.
    pub fn bind(addr: SocketAddr, registry: &Registry) -> Result<PublishPort> {
        let listener = TcpListener::bind(addr).with_context(|| format!("--publish-listen {addr}: cannot listen"))?;
        let addr = listener.local_addr()?;
        Ok(PublishPort { listener, addr, state: vec![Tick::default(); registry.len()] })
    }

    /// Apply one line. `Err` is the message for the publisher.
    fn line(&mut self, ctx: &mut FeedCtx, line: &mut [u8]) -> Result<(), String> {
        if !crate::encode::json::nesting_within(line, crate::encode::json::MAX_DEPTH) {
            return Err(format!("JSON nested deeper than {} levels", crate::encode::json::MAX_DEPTH));
        }
        let v = simd_json::to_borrowed_value(line).map_err(|e| format!("malformed JSON: {e}"))?;
        if let Some(t) = v.get("tick") {
            return self.tick(ctx, t);
        }
        let (Some(name), Some(data)) = (v.get("channel"), v.get("data")) else {
            return Err("a line is {\"channel\":NAME,\"data\":…} or {\"tick\":{\"token\":N,…}}".into());
        };
        let name = name.as_str().ok_or("`channel` must be a string")?;
        let id = ctx.channel_table.id(name).map_err(|e| e.message().to_string())?;
        let data = simd_json::to_vec(data).map_err(|e| e.to_string())?;
        let msg = ctx.channel_table.message(id, name, &data, now_ns());
        if let Some(c) = ctx.channels.as_mut() {
            c.publish(&msg);
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &mut FeedCtx, t: &BorrowedValue) -> Result<(), String> {
        let token = t.get("token").and_then(|v| v.as_u64()).ok_or("`tick.token` must be an integer")?;
        let slot = u32::try_from(token)
            .ok()
            .and_then(|tk| ctx.registry.slot_of_token(tk))
            .ok_or_else(|| format!("unknown token {token}"))?;
        let scale = 10f64.powi(i32::from(ctx.registry.get(slot).price_decimals));
        let s = &mut self.state[slot.idx()];
        let price = |k: &str| -> Result<Option<i64>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(v) => v
                    .cast_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| Some((f * scale).round() as i64))
                    .ok_or(format!("`tick.{k}` must be a number")),
            }
        };
        let int = |k: &str| -> Result<Option<u64>, String> {
            match t.get(k) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or(format!("`tick.{k}` must be a non-negative integer")),
            }
        };
        let mut next = Tick { token: token as u32, slot: slot.0, ..*s };
        next.ltp = price("ltp")?.unwrap_or(s.ltp);
        next.volume = int("volume")?.unwrap_or(s.volume);
        next.ltq = int("ltq")?.map_or(s.ltq, |q| q as u32);
        for (k, f) in [("bid", &mut next.bid), ("ask", &mut next.ask)] {
            if let Some(p) = price(k)? {
                *f = p;
                next.flags |= FLAG_QUOTE;
            }
        }
        for (k, f) in [("bid_qty", &mut next.bid_qty), ("ask_qty", &mut next.ask_qty)] {
            if let Some(q) = int(k)? {
                *f = q as u32;
            }
        }
        for (k, f) in
            [("open", &mut next.open), ("high", &mut next.high), ("low", &mut next.low), ("close", &mut next.close)]
        {
            if let Some(p) = price(k)? {
                *f = p;
                next.flags |= FLAG_OHLC;
            }
        }
        if let Some(oi) = int("oi")? {
            next.oi = oi;
            next.flags |= FLAG_OI;
        }
        next.seq = match int("seq")? {
            Some(q) if q <= s.seq => return Err(format!("`tick.seq` {q} is not after the last one ({})", s.seq)),
            Some(q) => q,
            None => s.seq.checked_add(1).ok_or("`tick.seq` exhausted")?,
        };
        let now = now_ns();
        next.ts_ns = int("ts")?.unwrap_or(now);
        next.ts_recv_ns = now;
        *s = next;
        if ctx.fanout.publish(&next) {
            ctx.health.published(1, now);
        }
        Ok(())
    }

    /// Read and apply what `p` sent. False when it is gone.
    fn read_lines(&mut self, p: &mut Publisher, ctx: &mut FeedCtx, chunk: &mut [u8]) -> bool {
        let (lines, skipping, out) = (&mut p.lines, &mut p.skipping, &mut p.out);
        let alive = read_stream(&mut p.stream, &mut p.buf, chunk, |buf| {
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let end = start + nl;
                *lines += 1;
                if std::mem::take(skipping) {
                    start = end + 1;
                    continue;
                }
                let mut line = buf[start..end].to_vec();
                if line.iter().any(|b| !b.is_ascii_whitespace()) {
                    ctx.health.packets.fetch_add(1, Ordering::Relaxed);
                    if let Err(msg) = self.line(ctx, &mut line) {
                        ctx.health.rejected.fetch_add(1, Ordering::Relaxed);
                        reply(out, *lines, &msg);
                    }
                }
                start = end + 1;
            }
            buf.drain(..start);
            if buf.len() > MAX_LINE {
                // Drop the over-long line up to its newline, answer once.
                buf.clear();
                *skipping = true;
                ctx.health.rejected.fetch_add(1, Ordering::Relaxed);
                reply(out, *lines + 1, &format!("line longer than {MAX_LINE} bytes"));
            }
            true
        });
        let _ = p.stream.write(&p.out).map(|n| p.out.drain(..n));
        alive
    }
}

fn reply(out: &mut Vec<u8>, line: u64, msg: &str) {
    if out.len() < MAX_REPLY {
        out.extend_from_slice(serde_json::json!({"error": msg, "line": line}).to_string().as_bytes());
        out.push(b'\n');
    }
}

impl Listening for PublishPort {
    type Peer = Publisher;
    const CHUNK: usize = 64 * 1024;

    fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    fn accept(&mut self, stream: TcpStream, _: SocketAddr, _: &FeedCtx) -> Publisher {
        Publisher { stream, buf: Vec::new(), out: Vec::new(), lines: 0, skipping: false }
    }

    fn stream(peer: &mut Publisher) -> &mut TcpStream {
        &mut peer.stream
    }

    fn serve(&mut self, peer: &mut Publisher, ctx: &mut FeedCtx, chunk: &mut [u8]) -> bool {
        self.read_lines(peer, ctx, chunk)
    }
}

impl Source for PublishPort {
    fn kind(&self) -> &'static str {
        "publish"
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn publishes_channels(&self) -> bool {
        true
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        listen::run(&mut *self, &mut ctx);
    }
}
