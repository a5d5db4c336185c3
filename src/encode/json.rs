//! Native JSON `market_data` frames, written by hand into a byte buffer:
//! no allocation, no formatting machinery, exact fixed-point prices.
//!
//! ```json
//! {"type":"market_data","token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":2,"seq":1042,"ts":1763712000123456789,"data":{"ltp":2850.5,"ltq":10,"volume":1500000,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"bid":2850.45,"ask":2850.55,"bid_qty":500,"ask_qty":750,"oi":0}}
//! ```
//! Depth mode adds `"depth":{"buy":[{"price":..,"quantity":..,"orders":..}],"sell":[..]}`.

use std::ops::Range;

use super::Marks;
use crate::instrument::Instrument;
use crate::tick::{write_price, Level, Mode, Tick};
use crate::ws::frame;

/// Deepest nesting accepted in any JSON we parse (client requests, publish
/// lines, channel payloads). simd-json builds and drops its tree
/// recursively, so unbounded nesting would overflow a thread's stack.
pub const MAX_DEPTH: usize = 32;

/// Does `bytes` nest arrays/objects at most `max` deep? One pass, counting
/// brackets outside strings; cheap enough to run before every parse.
pub fn nesting_within(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Append `s` as a JSON string (quoted, escaped).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[usize::from(b >> 4)]);
                out.push(b"0123456789abcdef"[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Append `key` then the integer `v`.
#[inline]
pub(crate) fn int(out: &mut Vec<u8>, key: &[u8], v: impl itoa::Integer) {
    out.extend_from_slice(key);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Append `key` then the fixed-point price `raw` at `dec` decimals.
#[inline]
pub(crate) fn price(out: &mut Vec<u8>, key: &[u8], raw: i64, dec: u8) {
    out.extend_from_slice(key);
    write_price(out, raw, dec);
}

/// Depth levels as `[{"price":..,"quantity":..,"orders":..},…]` (also OpenAlgo's shape).
pub(crate) fn levels(out: &mut Vec<u8>, side: &[Level], n: usize, dec: u8) {
    out.push(b'[');
    for (i, l) in side.iter().take(n).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        price(out, b"{\"price\":", l.price, dec);
        int(out, b",\"quantity\":", l.qty);
        int(out, b",\"orders\":", l.orders);
        out.push(b'}');
    }
    out.push(b']');
}

/// Append a `market_data` text frame; returns the frame's range in `out`.
pub fn market_data(out: &mut Vec<u8>, mode: Mode, t: &Tick, ins: &Instrument, marks: Marks) -> Range<usize> {
    let start = frame::begin(out);
    market_data_object(out, mode, t, (&ins.symbol, &ins.exchange, ins.price_decimals), marks);
    frame::finish(out, start, frame::OP_TEXT)
}

/// Append the `market_data` JSON object alone (no frame): what
/// `tickcast tail --json` prints. `ins` is (symbol, exchange, price decimals).
pub fn market_data_object(out: &mut Vec<u8>, mode: Mode, t: &Tick, ins: (&str, &str, u8), marks: Marks) {
    let (symbol, exchange, dec) = ins;
    int(out, b"{\"type\":\"market_data\",\"token\":", t.token);
    out.extend_from_slice(b",\"symbol\":");
    write_str(out, symbol);
    out.extend_from_slice(b",\"exchange\":");
    write_str(out, exchange);
    int(out, b",\"mode\":", mode as u8);
    int(out, b",\"seq\":", t.seq);
    int(out, b",\"ts\":", t.ts_ns);
    if marks.snapshot {
        out.extend_from_slice(b",\"snapshot\":true");
    }
    if marks.conflated {
        out.extend_from_slice(b",\"conflated\":true");
    }
    price(out, b",\"data\":{\"ltp\":", t.ltp, dec);
    if mode != Mode::Ltp {
        int(out, b",\"ltq\":", t.ltq);
        int(out, b",\"volume\":", t.volume);
        price(out, b",\"open\":", t.open, dec);
        price(out, b",\"high\":", t.high, dec);
        price(out, b",\"low\":", t.low, dec);
        price(out, b",\"close\":", t.close, dec);
        price(out, b",\"bid\":", t.bid, dec);
        price(out, b",\"ask\":", t.ask, dec);
        int(out, b",\"bid_qty\":", t.bid_qty);
        int(out, b",\"ask_qty\":", t.ask_qty);
        int(out, b",\"oi\":", t.oi);
    }
    if mode == Mode::Depth {
        let n = usize::from(t.depth_levels.min(crate::tick::DEPTH_LEVELS as u8));
        out.extend_from_slice(b",\"depth\":{\"buy\":");
        levels(out, &t.depth.bids, n, dec);
        out.extend_from_slice(b",\"sell\":");
        levels(out, &t.depth.asks, n, dec);
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::instrument::Registry;

    pub(crate) fn sample() -> Tick {
        let mut t = Tick {
            token: 2885,
            seq: 1042,
            ts_ns: 1_763_712_000_123_456_789,
            ltp: 285050,
            ltq: 10,
            volume: 1_500_000,
            open: 282000,
            high: 286000,
            low: 281500,
            close: 284825,
            bid: 285045,
            ask: 285055,
            bid_qty: 500,
            ask_qty: 750,
            depth_levels: 2,
            ..Tick::default()
        };
        t.depth.bids[0] = Level { price: 285045, qty: 500, orders: 3 };
        t.depth.bids[1] = Level { price: 285040, qty: 100, orders: 1 };
        t.depth.asks[0] = Level { price: 285055, qty: 750, orders: 4 };
        t.depth.asks[1] = Level { price: 285060, qty: 25, orders: 2 };
        t
    }

    fn payload(mode: Mode, marks: Marks) -> String {
        let reg = Registry::bundled();
        let ins = reg.get(reg.slot_of_token(2885).unwrap());
        let mut out = Vec::new();
        let r = market_data(&mut out, mode, &sample(), ins, marks);
        let f = &out[r];
        assert_eq!(frame::frame_len(f), Some(f.len()));
        let hl = if f[1] == 126 { 4 } else { 2 };
        String::from_utf8(f[hl..].to_vec()).unwrap()
    }

    /// The protocol document's `market_data` example, copied verbatim from
    /// `spec/protocol.md` ("Native protocol — `GET /stream`", Server →
    /// client). [`sample`] is that tick.
    const SPEC_QUOTE: &str = r#"{"type":"market_data","token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":2,"seq":1042,"ts":1763712000123456789,"data":{"ltp":2850.5,"ltq":10,"volume":1500000,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"bid":2850.45,"ask":2850.55,"bid_qty":500,"ask_qty":750,"oi":0}}"#;

    #[test]
    fn quote_matches_the_spec_example() {
        let got = payload(Mode::Quote, Marks::default());
        // Field by field first (a clearer failure), then byte for byte.
        let (g, w): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&got).unwrap(), serde_json::from_str(SPEC_QUOTE).unwrap());
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&g), keys(&w), "top-level fields, in order");
        assert_eq!(keys(&g["data"]), keys(&w["data"]), "data fields, in order");
        for k in keys(&w) {
            assert_eq!(g[&k], w[&k], "field {k}");
        }
        assert_eq!(got, SPEC_QUOTE);
    }

    /// The module's doc comment shows the same example as the protocol
    /// document (the test above holds the encoder to the document).
    #[test]
    fn the_doc_comment_shows_the_spec_example() {
        let doc: Vec<&str> = include_str!("json.rs").lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(doc.contains(&format!("//! {SPEC_QUOTE}").as_str()), "src/encode/json.rs's doc example differs");
    }

    #[test]
    fn ltp_and_marks() {
        assert_eq!(
            payload(Mode::Ltp, Marks { snapshot: true, conflated: false }),
            r#"{"type":"market_data","token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":1,"seq":1042,"ts":1763712000123456789,"snapshot":true,"data":{"ltp":2850.5}}"#
        );
    }

    #[test]
    fn depth_is_valid_json_with_levels() {
        let s = payload(Mode::Depth, Marks { snapshot: false, conflated: true });
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["mode"], 3);
        assert_eq!(v["conflated"], true);
        assert_eq!(v["data"]["depth"]["buy"][1]["price"], 2850.4);
        assert_eq!(v["data"]["depth"]["sell"][0]["quantity"], 750);
        assert_eq!(v["data"]["depth"]["sell"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(nesting_within(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!nesting_within(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(nesting_within(br#"{"s":"[[[[[[[[\"[[["}"#, 1), "brackets in strings do not count");
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(!nesting_within(deep.as_bytes(), MAX_DEPTH));
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n");
        assert_eq!(out, br#""a\"b\\c\u000a""#);
    }
}
