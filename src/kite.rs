//! Kite Connect v3's ticker wire format, both ways, sans-IO: the binary
//! packets a Kite WebSocket sends (written for `/kite` clients, read by the
//! `kite://` source), instrument tokens and price scales.
//!
//! The contract is the official Python client (`kiteconnect/ticker.py`):
//! a data frame is a 2-byte big-endian packet count, then for each packet a
//! 2-byte length and the packet. A packet's length says what it is:
//!
//! | length | packet |
//! |---|---|
//! | 8 | LTP (any instrument): token, last price |
//! | 28 / 32 | index quote / full: token, last, high, low, open, close, change, [exchange time] |
//! | 44 | quote: token, last, last qty, average price, volume, total buy qty, total sell qty, open, high, low, close |
//! | 184 | full: quote, last trade time, OI, OI day high, OI day low, exchange time, 10 × (qty, price, orders u16, 2 pad) depth, bids first |
//!
//! All fields are big-endian 32-bit; prices are integers in the segment's
//! minor units (CDS: 10⁷, BCD and NCO: 10⁴, everything else: 100), times
//! are Unix seconds. A token is `exchange_token × 256 + segment`.
//!
//! `Tick` has no place for the average price, the OI day range or the
//! book's total quantities; packets written here carry 0 for the first two
//! and the depth shown (or the best level) for the totals, and the decoder
//! drops them.

use std::ops::Range;

// Token arithmetic lives with the registry, which computes every
// instrument's Kite token at load (and so must not import this module).
use crate::instrument::Instrument;
pub use crate::instrument::{segment, segment_for, token};
use crate::tick::{Depth, Level, Mode, Tick, DEPTH_LEVELS, FLAG_DEPTH, FLAG_OHLC, FLAG_OI, FLAG_QUOTE};

/// Length of an LTP packet.
pub const LTP_LEN: usize = 8;
/// Length of an index quote packet.
pub const INDEX_QUOTE_LEN: usize = 28;
/// Length of an index full packet.
pub const INDEX_FULL_LEN: usize = 32;
/// Length of a quote packet.
pub const QUOTE_LEN: usize = 44;
/// Length of a full packet.
pub const FULL_LEN: usize = 184;

/// Decimals of the prices in a packet of `segment` (pykiteconnect's divisors).
pub fn decimals(segment: u8) -> u8 {
    match segment {
        segment::CDS => 7,
        segment::BCD | segment::NCO => 4,
        _ => 2,
    }
}

/// Kite's name of a mode: `ltp`, `quote`, `full` (tickcast's depth).
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Ltp => "ltp",
        Mode::Quote => "quote",
        Mode::Depth => "full",
    }
}

/// The mode Kite calls `name`.
pub fn parse_mode(name: &str) -> Option<Mode> {
    match name {
        "ltp" => Some(Mode::Ltp),
        "quote" => Some(Mode::Quote),
        "full" => Some(Mode::Depth),
        _ => None,
    }
}

/// `10^n` for the price rescaling (n ≤ 16).
const fn pow10(n: u32) -> i64 {
    10i64.pow(n)
}

/// `v` at `from` decimals, at `to` decimals (rounded half away from zero).
#[inline]
fn rescale(v: i64, from: u8, to: u8) -> i64 {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => v,
        std::cmp::Ordering::Less => v.saturating_mul(pow10(u32::from(to - from).min(16))),
        std::cmp::Ordering::Greater => {
            let d = pow10(u32::from(from - to).min(16));
            let half = if v < 0 { -d / 2 } else { d / 2 };
            (v + half) / d
        }
    }
}

/// Length of the packet `ins` gets in `mode`.
#[inline]
pub fn packet_len(mode: Mode, index: bool) -> usize {
    match (mode, index) {
        (Mode::Ltp, _) => LTP_LEN,
        (Mode::Quote, true) => INDEX_QUOTE_LEN,
        (Mode::Depth, true) => INDEX_FULL_LEN,
        (Mode::Quote, false) => QUOTE_LEN,
        (Mode::Depth, false) => FULL_LEN,
    }
}

/// Append `tick` as one length-prefixed packet in `mode` (the part of a
/// data frame after its packet count); returns its range. Empty when the
/// instrument has no Kite token (an exchange Kite does not list).
pub fn write_packet(out: &mut Vec<u8>, mode: Mode, tick: &Tick, ins: &Instrument) -> Range<usize> {
    let start = out.len();
    if ins.kite_token == 0 {
        return start..start;
    }
    let seg = (ins.kite_token & 0xff) as u8;
    let (from, to) = (ins.price_decimals, decimals(seg));
    let price = |v: i64| -> [u8; 4] {
        (rescale(v, from, to).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32).to_be_bytes()
    };
    let int = |v: u64| -> [u8; 4] { (v.min(u64::from(u32::MAX)) as u32).to_be_bytes() };
    let secs = |ns: u64| int(ns / 1_000_000_000);
    let index = seg == segment::INDICES;
    let len = packet_len(mode, index);
    // Built on the stack, then one copy: no capacity check per field.
    let mut head = [0u8; 2 + LTP_LEN]; // length, token, last price: every packet starts so
    head[..2].copy_from_slice(&(len as u16).to_be_bytes());
    head[2..6].copy_from_slice(&ins.kite_token.to_be_bytes());
    head[6..].copy_from_slice(&price(tick.ltp));
    match (mode, index) {
        (Mode::Ltp, _) => out.extend_from_slice(&head),
        (_, true) => {
            let mut p = Packet { buf: [0; 2 + INDEX_FULL_LEN], at: 0 };
            p.put(&head);
            for v in [tick.high, tick.low, tick.open, tick.close] {
                p.put(&price(v));
            }
            let change = if tick.close == 0 { 0 } else { tick.ltp - tick.close };
            p.put(&price(change));
            if mode == Mode::Depth {
                p.put(&secs(tick.ts_ns));
            }
            out.extend_from_slice(&p.buf[..p.at]);
        }
        (_, false) => {
            let mut p = Packet { buf: [0; 2 + FULL_LEN], at: 0 };
            p.put(&head);
            let levels =
                if tick.flags & FLAG_DEPTH != 0 { usize::from(tick.depth_levels).min(DEPTH_LEVELS) } else { 0 };
            let shown = |side: &[Level; DEPTH_LEVELS], best: u32| -> u64 {
                if levels > 0 {
                    side[..levels].iter().map(|l| u64::from(l.qty)).sum()
                } else {
                    u64::from(best)
                }
            };
            p.put(&int(u64::from(tick.ltq)));
            p.put(&price(0)); // average traded price: not carried
            p.put(&int(tick.volume));
            p.put(&int(shown(&tick.depth.bids, tick.bid_qty)));
            p.put(&int(shown(&tick.depth.asks, tick.ask_qty)));
            for v in [tick.open, tick.high, tick.low, tick.close] {
                p.put(&price(v));
            }
            if mode == Mode::Depth {
                p.put(&secs(tick.ts_ns)); // last trade time
                p.put(&int(tick.oi));
                p.at += 8; // OI day high and low: not carried (zero)
                p.put(&secs(tick.ts_ns));
                for side in [&tick.depth.bids, &tick.depth.asks] {
                    for l in &side[..levels] {
                        p.put(&l.qty.to_be_bytes());
                        p.put(&price(l.price));
                        p.put(&(l.orders.min(u32::from(u16::MAX)) as u16).to_be_bytes());
                        p.at += 2;
                    }
                    p.at += 12 * (DEPTH_LEVELS - levels); // empty levels: zero
                }
            }
            out.extend_from_slice(&p.buf[..p.at]);
        }
    }
    debug_assert_eq!(out.len() - start, 2 + len);
    start..out.len()
}

/// A packet being written, at most `N` bytes with its length prefix
/// (zeroed: skipped fields stay 0).
struct Packet<const N: usize> {
    buf: [u8; N],
    at: usize,
}

impl<const N: usize> Packet<N> {
    /// Append `bytes`.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// Why a frame or packet from upstream was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Under two bytes but not a heartbeat, or a packet's length field cut off.
    Truncated,
    /// The count promises more packets than the frame holds.
    CountPastEnd,
    /// Bytes left over after the last counted packet.
    TrailingBytes,
    /// A packet whose length is none of Kite's.
    UnknownLength,
}

impl DecodeError {
    /// Names, in `/status` and `/metrics` order.
    pub const NAMES: [&'static str; 4] = ["truncated", "count_past_end", "trailing_bytes", "unknown_length"];

    /// Index into [`DecodeError::NAMES`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The packets of one binary data frame, checked whole before any is
/// given out (a frame whose structure is broken is dropped as one). A
/// 1-byte frame is a heartbeat: no packets.
///
/// # Errors
/// The frame's structure is broken: nothing in it may be applied.
pub fn packets(frame: &[u8]) -> Result<Packets<'_>, DecodeError> {
    if frame.len() < 2 {
        return Ok(Packets { rest: &[], left: 0 });
    }
    let count = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
    let mut at = 2;
    for _ in 0..count {
        if at == frame.len() {
            return Err(DecodeError::CountPastEnd);
        }
        let Some(hdr) = frame.get(at..at + 2) else { return Err(DecodeError::Truncated) };
        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
        at += 2 + len;
        if at > frame.len() {
            return Err(DecodeError::CountPastEnd);
        }
    }
    if at != frame.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(Packets { rest: &frame[2..], left: count })
}

/// Iterator over a checked frame's packets (see [`packets`]).
#[derive(Debug)]
pub struct Packets<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Packets<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = usize::from(u16::from_be_bytes([self.rest[0], self.rest[1]]));
        let (p, rest) = self.rest[2..].split_at(len);
        self.rest = rest;
        Some(p)
    }
}

/// The instrument token a packet is about (`None`: under 4 bytes).
pub fn packet_token(packet: &[u8]) -> Option<u32> {
    packet.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// What one packet said, applied to an instrument's previous state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    /// The packet's mode.
    pub mode: Mode,
    /// Its exchange timestamp, ns since the epoch (full packets; 0: none).
    pub exchange_ts_ns: u64,
}

/// Apply `packet` to `tick` (the instrument's previous state, prices at
/// `price_decimals`): the fields the packet carries replace the old ones,
/// the rest stay. Nothing is written when the packet is refused.
///
/// # Errors
/// A length that is none of Kite's.
pub fn apply(packet: &[u8], tick: &mut Tick, price_decimals: u8) -> Result<Update, DecodeError> {
    let u32_at = |i: usize| u32::from_be_bytes([packet[i], packet[i + 1], packet[i + 2], packet[i + 3]]);
    let seg = (packet_token(packet).ok_or(DecodeError::UnknownLength)? & 0xff) as u8;
    let from = decimals(seg);
    let price = |i: usize| rescale(i64::from(u32_at(i) as i32), from, price_decimals);
    let secs = |i: usize| u64::from(u32_at(i)) * 1_000_000_000;
    let mut t = *tick;
    let mut ts = 0;
    let mode = match packet.len() {
        LTP_LEN => {
            t.ltp = price(4);
            Mode::Ltp
        }
        INDEX_QUOTE_LEN | INDEX_FULL_LEN => {
            t.ltp = price(4);
            (t.high, t.low, t.open, t.close) = (price(8), price(12), price(16), price(20));
            t.flags |= FLAG_OHLC;
            if packet.len() == INDEX_FULL_LEN {
                ts = secs(28);
                Mode::Depth
            } else {
                Mode::Quote
            }
        }
        QUOTE_LEN | FULL_LEN => {
            t.ltp = price(4);
            t.ltq = u32_at(8);
            t.volume = u64::from(u32_at(16));
            (t.open, t.high, t.low, t.close) = (price(28), price(32), price(36), price(40));
            t.flags |= FLAG_OHLC;
            if packet.len() == FULL_LEN {
                t.oi = u64::from(u32_at(48));
                ts = if u32_at(60) != 0 { secs(60) } else { secs(44) };
                let level = |i: usize| Level {
                    qty: u32_at(i),
                    price: price(i + 4),
                    orders: u32::from(u16::from_be_bytes([packet[i + 8], packet[i + 9]])),
                };
                let mut depth = Depth::default();
                for k in 0..DEPTH_LEVELS {
                    depth.bids[k] = level(64 + 12 * k);
                    depth.asks[k] = level(64 + 12 * (DEPTH_LEVELS + k));
                }
                t.depth = depth;
                t.depth_levels = DEPTH_LEVELS as u8;
                (t.bid, t.bid_qty) = (depth.bids[0].price, depth.bids[0].qty);
                (t.ask, t.ask_qty) = (depth.asks[0].price, depth.asks[0].qty);
                t.flags |= FLAG_DEPTH | FLAG_QUOTE | FLAG_OI;
                Mode::Depth
            } else {
                Mode::Quote
            }
        }
        _ => return Err(DecodeError::UnknownLength),
    };
    *tick = t;
    Ok(Update { mode, exchange_ts_ns: ts })
}

/// A subscription request as Kite takes it: `{"a":"subscribe","v":[…]}`
/// (also `unsubscribe`), or `{"a":"mode","v":["full",[…]]}` with `mode`.
pub fn request(action: &str, mode: Option<Mode>, tokens: &[u32]) -> String {
    let list = serde_json::to_string(tokens).unwrap_or_else(|_| "[]".into());
    match mode {
        Some(m) => format!(r#"{{"a":"{action}","v":["{}",{list}]}}"#, mode_name(m)),
        None => format!(r#"{{"a":"{action}","v":{list}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(exchange: &str, token: u32, kite_token: u32, decimals: u8) -> Instrument {
        Instrument {
            token,
            kite_token,
            exchange: exchange.into(),
            symbol: "X".into(),
            name: "".into(),
            isin: "".into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: decimals,
            ref_price: 0,
        }
    }

    fn be(v: u32) -> [u8; 4] {
        v.to_be_bytes()
    }

    /// A full packet for RELIANCE (738561), built field by field from the
    /// documentation's table.
    fn full_packet() -> Vec<u8> {
        let mut p = Vec::new();
        for v in [738561, 285050, 10, 284900, 1_234_567, 5000, 6000, 282000, 286000, 281000, 281500] {
            p.extend_from_slice(&be(v));
        }
        for v in [1_700_000_000, 77, 0, 0, 1_700_000_001] {
            p.extend_from_slice(&be(v));
        }
        for k in 0..10u32 {
            p.extend_from_slice(&be(100 + k));
            p.extend_from_slice(&be(if k < 5 { 285000 - 5 * k } else { 285100 + 5 * (k - 5) }));
            p.extend_from_slice(&(k as u16 + 1).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        assert_eq!(p.len(), FULL_LEN);
        p
    }

    fn frame(packets: &[&[u8]]) -> Vec<u8> {
        let mut f = (packets.len() as u16).to_be_bytes().to_vec();
        for p in packets {
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(p);
        }
        f
    }

    #[test]
    fn tokens_and_scales_follow_the_client() {
        assert_eq!(token(2885, segment::NSE), Some(738561));
        assert_eq!(token(u32::MAX, 1), None);
        assert_eq!(segment_for("NSE", false), Some(1));
        assert_eq!(segment_for("NSE", true), Some(9));
        assert_eq!(segment_for("NYSE", false), None);
        assert_eq!(
            (decimals(segment::CDS), decimals(segment::BCD), decimals(segment::NCO), decimals(segment::MCX)),
            (7, 4, 4, 2)
        );
        assert_eq!(rescale(285050, 2, 2), 285050);
        assert_eq!(rescale(285050, 2, 4), 28505000);
        assert_eq!(rescale(28505049, 4, 2), 285050);
        assert_eq!(rescale(-28505050, 4, 2), -285051);
        for m in [Mode::Ltp, Mode::Quote, Mode::Depth] {
            assert_eq!(parse_mode(mode_name(m)), Some(m));
        }
        assert_eq!(parse_mode("depth"), None);
    }

    #[test]
    fn a_full_packet_decodes_every_field() {
        let p = full_packet();
        let f = frame(&[&p]);
        let got: Vec<&[u8]> = packets(&f).unwrap().collect();
        assert_eq!(got, [&p[..]]);
        let mut t = Tick { volume: 1, ..Tick::default() };
        let u = apply(&p, &mut t, 2).unwrap();
        assert_eq!(u, Update { mode: Mode::Depth, exchange_ts_ns: 1_700_000_001_000_000_000 });
        assert_eq!((t.ltp, t.ltq, t.volume, t.oi), (285050, 10, 1_234_567, 77));
        assert_eq!((t.open, t.high, t.low, t.close), (282000, 286000, 281000, 281500));
        assert_eq!(t.depth.bids[4], Level { price: 284980, qty: 104, orders: 5 });
        assert_eq!(t.depth.asks[0], Level { price: 285100, qty: 105, orders: 6 });
        assert_eq!((t.bid, t.bid_qty, t.ask, t.ask_qty), (285000, 100, 285100, 105));
        assert_eq!(t.depth_levels, 5);
        assert_eq!(
            t.flags & (FLAG_DEPTH | FLAG_OHLC | FLAG_QUOTE | FLAG_OI),
            FLAG_DEPTH | FLAG_OHLC | FLAG_QUOTE | FLAG_OI
        );
    }

    #[test]
    fn ltp_and_index_packets_keep_what_they_do_not_carry() {
        let mut t = Tick { volume: 42, open: 1, ..Tick::default() };
        let ltp = [be(738561), be(290000)].concat();
        assert_eq!(apply(&ltp, &mut t, 2).unwrap().mode, Mode::Ltp);
        assert_eq!((t.ltp, t.volume, t.open), (290000, 42, 1));
        let mut idx = [be(256265), be(2500000), be(2510000), be(2490000), be(2495000), be(2480000), be(20000)].concat();
        let mut t = Tick::default();
        assert_eq!(apply(&idx, &mut t, 2).unwrap().mode, Mode::Quote);
        assert_eq!((t.ltp, t.high, t.low, t.open, t.close), (2500000, 2510000, 2490000, 2495000, 2480000));
        idx.extend_from_slice(&be(1_700_000_000));
        assert_eq!(
            apply(&idx, &mut t, 2).unwrap(),
            Update { mode: Mode::Depth, exchange_ts_ns: 1_700_000_000_000_000_000 }
        );
        // Currency: seven decimals on the wire, four in the master.
        let cds = [be(token(1234, segment::CDS).unwrap()), be(832_512_500)].concat();
        apply(&cds, &mut t, 4).unwrap();
        assert_eq!(t.ltp, 832_513);
    }

    #[test]
    fn broken_frames_are_dropped_whole_and_odd_packets_alone() {
        let p = full_packet();
        let ok = frame(&[&p, &p[..8]]);
        assert_eq!(packets(&ok).unwrap().count(), 2);
        assert_eq!(packets(&[0x01]).unwrap().count(), 0, "a heartbeat");
        assert_eq!(packets(&[]).unwrap().count(), 0);
        let mut more = ok.clone();
        more[1] = 3;
        assert_eq!(packets(&more).unwrap_err(), DecodeError::CountPastEnd);
        let cut = &ok[..ok.len() - 1];
        assert_eq!(packets(cut).unwrap_err(), DecodeError::CountPastEnd);
        assert_eq!(packets(&ok[..3]).unwrap_err(), DecodeError::Truncated);
        let mut extra = ok.clone();
        extra.push(0);
        assert_eq!(packets(&extra).unwrap_err(), DecodeError::TrailingBytes);
        let mut t = Tick { ltp: 7, ..Tick::default() };
        for bad in [&p[..100], &p[..3], &p[..0], &p[..45]] {
            assert_eq!(apply(bad, &mut t, 2).unwrap_err(), DecodeError::UnknownLength);
            assert_eq!(t, Tick { ltp: 7, ..Tick::default() }, "nothing partial applied");
        }
    }

    #[test]
    fn written_packets_decode_to_the_same_tick() {
        let reliance = ins("NSE", 2885, 738561, 2);
        let mut t = Tick {
            token: 2885,
            ltp: 285050,
            ltq: 10,
            volume: 1_234_567,
            open: 282000,
            high: 286000,
            low: 281000,
            close: 281500,
            oi: 77,
            ts_ns: 1_700_000_001_000_000_000,
            ..Tick::default()
        };
        t.flags = FLAG_OHLC | FLAG_DEPTH | FLAG_QUOTE | FLAG_OI;
        t.depth_levels = 5;
        for k in 0..5 {
            t.depth.bids[k] = Level { price: 285000 - 5 * k as i64, qty: 100 + k as u32, orders: 1 + k as u32 };
            t.depth.asks[k] = Level { price: 285100 + 5 * k as i64, qty: 105 + k as u32, orders: 6 + k as u32 };
        }
        (t.bid, t.bid_qty, t.ask, t.ask_qty) = (285000, 100, 285100, 105);
        for (mode, len) in [(Mode::Ltp, 8), (Mode::Quote, 44), (Mode::Depth, 184)] {
            let mut out = vec![9];
            let r = write_packet(&mut out, mode, &t, &reliance);
            assert_eq!(r, 1..3 + len);
            assert_eq!(&out[1..3], &(len as u16).to_be_bytes());
            let mut back = Tick::default();
            let u = apply(&out[3..], &mut back, 2).unwrap();
            assert_eq!(u.mode, mode);
            assert_eq!(back.ltp, t.ltp);
            if mode == Mode::Depth {
                assert_eq!((back.depth, back.oi, u.exchange_ts_ns), (t.depth, t.oi, t.ts_ns));
                let total_buy = u32::from_be_bytes(out[3 + 20..3 + 24].try_into().unwrap());
                assert_eq!(total_buy, 100 + 101 + 102 + 103 + 104);
            }
            if mode != Mode::Ltp {
                assert_eq!(
                    (back.open, back.high, back.low, back.close, back.volume),
                    (t.open, t.high, t.low, t.close, t.volume)
                );
            }
        }
        let nifty = ins("NSE", 26000, token(26000, segment::INDICES).unwrap(), 2);
        for (mode, len) in [(Mode::Ltp, 8), (Mode::Quote, 28), (Mode::Depth, 32)] {
            let mut out = Vec::new();
            assert_eq!(write_packet(&mut out, mode, &t, &nifty).len(), 2 + len);
        }
        let unlisted = ins("NYSE", 1, 0, 2);
        assert!(write_packet(&mut Vec::new(), Mode::Ltp, &t, &unlisted).is_empty());
        // A price past int32 saturates rather than wrapping.
        let big = Tick { ltp: i64::from(i32::MAX) + 10, ..t };
        let mut out = Vec::new();
        write_packet(&mut out, Mode::Ltp, &big, &reliance);
        assert_eq!(&out[6..10], &i32::MAX.to_be_bytes());
    }

    #[test]
    fn requests_have_kites_shape() {
        assert_eq!(request("subscribe", None, &[738561, 256265]), r#"{"a":"subscribe","v":[738561,256265]}"#);
        assert_eq!(request("mode", Some(Mode::Depth), &[738561]), r#"{"a":"mode","v":["full",[738561]]}"#);
    }
}
