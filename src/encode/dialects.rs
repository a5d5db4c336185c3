//! Market-data frames in the shapes of the seed dialects, written by hand
//! like the native JSON (no allocation, exact fixed-point prices). Each is
//! built once per tick and dialect, then shared by every subscriber.
//!
//! ```json
//! {"type":"market_data","symbol":"RELIANCE","token":"2885","exchange":"NSE","timestamp":"2026-11-22T04:00:00.123Z","data":{"ltp":2850.5,…}}
//! {"type":"price_update","instrument_key":"NSE_EQ|INE002A01018","data":{"last_price":2451.5,"timestamp":"2026-01-19T10:30:00Z","change_percent":0.03,"volume":15000}}
//! {"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":2,"data":{"ltp":2850.5,"open":…,"timestamp":"2024-12-04T10:30:00"}}
//! {"stream":"trade@RELIANCE","data":{"e":"trade","t":1042,"m":false,"p":"2850.50","q":"10","s":"RELIANCE"}}
//! ```

use std::ops::Range;

use super::json::{int, price, write_str};
use super::Marks;
use crate::instrument::Instrument;
use crate::tick::{write_price, Level, Mode, Tick};
use crate::ws::frame;

/// Exchange stream bits (`Format::Exchange`).
pub mod stream {
    /// `trade@…`: one event per trade.
    pub const TRADE: u8 = 1;
    /// `ticker@…`: last price and day statistics.
    pub const TICKER: u8 = 2;
    /// `depth@…`: the order book.
    pub const DEPTH: u8 = 4;
}

/// OpenAlgo mode bits (`Format::OpenAlgo`).
pub mod openalgo_mode {
    use crate::tick::Mode;

    /// Mode 1: last traded price.
    pub const LTP: u8 = 1;
    /// Mode 2: quote.
    pub const QUOTE: u8 = 2;
    /// Mode 3: quote and depth.
    pub const DEPTH: u8 = 4;

    /// The bit of `mode`.
    #[inline]
    pub const fn bit(mode: Mode) -> u8 {
        1 << (mode as u8 - 1)
    }
}

/// IST, the offset OpenAlgo timestamps are written in (they carry no zone).
const IST_OFFSET_SECS: i64 = 5 * 3600 + 1800;

/// A price as a JSON string with all its decimals (`"1000.50"`), as
/// exchange APIs send them.
fn price_str(out: &mut Vec<u8>, raw: i64, dec: u8) {
    out.push(b'"');
    let start = out.len();
    write_price(out, raw, dec);
    // write_price trims trailing zeros; pad back to the instrument's scale.
    let frac = out[start..].iter().rposition(|&b| b == b'.').map_or(0, |p| out.len() - start - p - 1);
    if dec > 0 {
        for _ in frac..usize::from(dec) {
            out.push(b'0');
        }
    }
    out.push(b'"');
}

/// Append a UTC timestamp `2026-11-22T04:00:00.123` (+ `suffix`) for `ns`
/// shifted by `offset_secs`; milliseconds only when `millis`.
pub fn write_iso(out: &mut Vec<u8>, ns: u64, offset_secs: i64, millis: bool, suffix: &[u8]) {
    let secs = (ns / 1_000_000_000) as i64 + offset_secs;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 → civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let two = |out: &mut Vec<u8>, v: i64| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    out.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
    out.push(b'-');
    two(out, m);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    if millis {
        let ms = (ns / 1_000_000 % 1000) as i64;
        out.push(b'.');
        out.push(b'0' + (ms / 100) as u8);
        two(out, ms % 100);
    }
    out.extend_from_slice(suffix);
}

/// `2026-11-22T04:00:00.123Z` for `ns` (UTC, milliseconds), as a `String`:
/// the timestamp of control messages (acks, errors, status documents).
pub fn iso_string(ns: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_iso(&mut out, ns, 0, true, b"Z");
    String::from_utf8(out).expect("ASCII")
}

/// [`iso_string`] as a JSON value; null for 0 (never happened).
pub fn iso_json(ns: u64) -> serde_json::Value {
    if ns == 0 {
        return serde_json::Value::Null;
    }
    serde_json::Value::String(iso_string(ns))
}

/// `(ltp - close) / close` in hundredths of a percent, rounded; 0 without a close.
fn change_bp(t: &Tick) -> i64 {
    if t.close == 0 {
        return 0;
    }
    let num = i128::from(t.ltp - t.close) * 10_000;
    let den = i128::from(t.close);
    // Round half away from zero on magnitudes (integer division truncates
    // toward zero, so rounding signed operands directly rounds negative
    // changes the wrong way: -4.56 became -4).
    let magnitude = (num.abs() * 2 + den.abs()) / (2 * den.abs());
    (magnitude * num.signum() * den.signum()) as i64
}

/// Odin `market_data` (always the full quote: Odin has no modes).
pub fn odin(out: &mut Vec<u8>, _mode: Mode, t: &Tick, ins: &Instrument) -> Range<usize> {
    let start = frame::begin(out);
    let dec = ins.price_decimals;
    out.extend_from_slice(b"{\"type\":\"market_data\",\"symbol\":");
    write_str(out, &ins.symbol);
    int(out, b",\"token\":\"", t.token);
    out.extend_from_slice(b"\",\"exchange\":");
    write_str(out, &ins.exchange);
    out.extend_from_slice(b",\"timestamp\":\"");
    write_iso(out, t.ts_ns, 0, true, b"Z\"");
    price(out, b",\"data\":{\"ltp\":", t.ltp, dec);
    price(out, b",\"change\":", t.ltp - t.close, dec);
    price(out, b",\"change_percent\":", change_bp(t), 2);
    int(out, b",\"volume\":", t.volume);
    price(out, b",\"open\":", t.open, dec);
    price(out, b",\"high\":", t.high, dec);
    price(out, b",\"low\":", t.low, dec);
    price(out, b",\"close\":", t.close, dec);
    price(out, b",\"bid\":", t.bid, dec);
    price(out, b",\"ask\":", t.ask, dec);
    out.extend_from_slice(b"}}");
    frame::finish(out, start, frame::OP_TEXT)
}

/// The Upstox-style instrument key of the campus dialect: `NSE_EQ|<ISIN>`,
/// or `NSE_INDEX|<SYMBOL>` for an instrument without an ISIN.
pub fn campus_key(out: &mut Vec<u8>, ins: &Instrument) {
    out.extend_from_slice(ins.exchange.as_bytes());
    if ins.isin.is_empty() {
        out.extend_from_slice(b"_INDEX|");
        out.extend_from_slice(ins.symbol.as_bytes());
    } else {
        out.extend_from_slice(b"_EQ|");
        out.extend_from_slice(ins.isin.as_bytes());
    }
}

/// Campus `price_update`.
pub fn campus(out: &mut Vec<u8>, t: &Tick, ins: &Instrument) -> Range<usize> {
    let start = frame::begin(out);
    out.extend_from_slice(b"{\"type\":\"price_update\",\"instrument_key\":\"");
    campus_key(out, ins);
    price(out, b"\",\"data\":{\"last_price\":", t.ltp, ins.price_decimals);
    out.extend_from_slice(b",\"timestamp\":\"");
    write_iso(out, t.ts_ns, 0, false, b"Z\"");
    price(out, b",\"change_percent\":", change_bp(t), 2);
    int(out, b",\"volume\":", t.volume);
    out.extend_from_slice(b"}}");
    frame::finish(out, start, frame::OP_TEXT)
}

/// The OpenAlgo exchange of an instrument as a JSON string: its exchange,
/// or `NSE_INDEX` for an index (no ISIN), as OpenAlgo names index segments.
pub fn openalgo_exchange(out: &mut Vec<u8>, ins: &Instrument) {
    write_str(out, &ins.exchange);
    if ins.isin.is_empty() {
        out.pop(); // the closing quote
        out.extend_from_slice(b"_INDEX\"");
    }
}

/// OpenAlgo `market_data` frames for the modes in `modes`
/// (`openalgo_mode` bits), one WebSocket frame each, LTP first.
pub fn openalgo(out: &mut Vec<u8>, modes: u8, t: &Tick, ins: &Instrument) -> Range<usize> {
    let mut run = frame::Run::default();
    for mode in Mode::ALL.into_iter().filter(|&m| modes & openalgo_mode::bit(m) != 0) {
        let r = openalgo_frame(out, mode, t, ins);
        run.push(out, r);
    }
    run.range(out)
}

/// One OpenAlgo `market_data` frame, normalised as in the seed (numeric
/// `mode`): LTP carries `ltp` and `timestamp`; Quote the full quote with
/// the official SDK's fields (`last_trade_quantity`, `change`,
/// `change_percent`); Depth adds `depth.buy` / `depth.sell`. There is no
/// `avg_trade_price`: the feed does not carry one (the SDK reads 0).
///
/// ```json
/// {"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":2,"data":{"ltp":2850.5,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"volume":1500000,"bid":2850.45,"ask":2850.55,"bid_qty":500,"ask_qty":750,"oi":0,"prev_oi":0,"last_trade_quantity":10,"change":2.25,"change_percent":0.08,"timestamp":"2024-12-04T10:30:00"}}
/// ```
fn openalgo_frame(out: &mut Vec<u8>, mode: Mode, t: &Tick, ins: &Instrument) -> Range<usize> {
    let start = frame::begin(out);
    let dec = ins.price_decimals;
    out.extend_from_slice(b"{\"type\":\"market_data\",\"symbol\":");
    write_str(out, &ins.symbol);
    out.extend_from_slice(b",\"exchange\":");
    openalgo_exchange(out, ins);
    int(out, b",\"mode\":", mode as u8);
    price(out, b",\"data\":{\"ltp\":", t.ltp, dec);
    if mode != Mode::Ltp {
        price(out, b",\"open\":", t.open, dec);
        price(out, b",\"high\":", t.high, dec);
        price(out, b",\"low\":", t.low, dec);
        price(out, b",\"close\":", t.close, dec);
        int(out, b",\"volume\":", t.volume);
        price(out, b",\"bid\":", t.bid, dec);
        price(out, b",\"ask\":", t.ask, dec);
        int(out, b",\"bid_qty\":", t.bid_qty);
        int(out, b",\"ask_qty\":", t.ask_qty);
        int(out, b",\"oi\":", t.oi);
        int(out, b",\"prev_oi\":", t.prev_oi);
        int(out, b",\"last_trade_quantity\":", t.ltq);
        price(out, b",\"change\":", if t.close == 0 { 0 } else { t.ltp - t.close }, dec);
        price(out, b",\"change_percent\":", change_bp(t), 2);
    }
    if mode == Mode::Depth {
        let n = usize::from(t.depth_levels);
        out.extend_from_slice(b",\"depth\":{\"buy\":");
        super::json::levels(out, &t.depth.bids, n, dec);
        out.extend_from_slice(b",\"sell\":");
        super::json::levels(out, &t.depth.asks, n, dec);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"timestamp\":\"");
    write_iso(out, t.ts_ns, IST_OFFSET_SECS, false, b"\"");
    out.extend_from_slice(b"}}");
    frame::finish(out, start, frame::OP_TEXT)
}

/// One instrument of a Trading WS `price_update` (seed `001_…`), the
/// `"KEY":{…}` entry of its `symbols` object. The key is the symbol on the
/// default exchange (NSE), `EXCHANGE:SYMBOL` elsewhere (unique either way).
///
/// ```json
/// "RELIANCE":{"price":2850.5,"change":5.5,"change_pct":0.19,"volume":1500000,"high":2860.0,"low":2815.0,"open":2820.0,"close":2850.5}
/// ```
///
/// `change` and `change_pct` are against the previous close (`Tick::close`).
/// `open`/`high`/`low`/`close` are the day's bar so far, so `close` is the
/// last price, as in the seed's example (`"price":150.25,…,"close":150.25`);
/// they are left out when the feed sent no OHLC, as the seed's second symbol
/// shows. The previous close is `price - change`.
pub fn trading_symbol(out: &mut Vec<u8>, t: &Tick, ins: &Instrument) {
    if &*ins.exchange != crate::instrument::DEFAULT_EXCHANGE {
        // `"BSE:` then `SYMBOL"`, both escaped, without a temporary string.
        write_str(out, &ins.exchange);
        out.pop();
        out.push(b':');
        let at = out.len();
        write_str(out, &ins.symbol);
        out.remove(at);
    } else {
        write_str(out, &ins.symbol);
    }
    let dec = ins.price_decimals;
    price(out, b":{\"price\":", t.ltp, dec);
    let change = if t.close == 0 { 0 } else { t.ltp - t.close };
    price(out, b",\"change\":", change, dec);
    price(out, b",\"change_pct\":", change_bp(t), 2);
    int(out, b",\"volume\":", t.volume);
    if t.flags & crate::tick::FLAG_OHLC != 0 {
        price(out, b",\"high\":", t.high, dec);
        price(out, b",\"low\":", t.low, dec);
        price(out, b",\"open\":", t.open, dec);
        price(out, b",\"close\":", t.ltp, dec);
    }
    out.push(b'}');
}

/// The market name of an instrument in exchange streams: `RELIANCE` on the
/// default exchange (NSE), `BSE:RELIANCE` elsewhere.
pub fn exchange_market(out: &mut Vec<u8>, ins: &Instrument) {
    if &*ins.exchange != crate::instrument::DEFAULT_EXCHANGE {
        out.extend_from_slice(ins.exchange.as_bytes());
        out.push(b':');
    }
    out.extend_from_slice(ins.symbol.as_bytes());
}

fn exchange_head(out: &mut Vec<u8>, name: &[u8], ins: &Instrument) {
    out.extend_from_slice(b"{\"stream\":\"");
    out.extend_from_slice(name);
    out.push(b'@');
    exchange_market(out, ins);
    out.extend_from_slice(b"\",\"data\":{");
}

fn exchange_tail(out: &mut Vec<u8>, ins: &Instrument) {
    out.extend_from_slice(b",\"s\":\"");
    exchange_market(out, ins);
    out.extend_from_slice(b"\"}}");
}

fn exchange_side(out: &mut Vec<u8>, side: &[Level], n: usize, dec: u8) {
    out.push(b'[');
    for (i, l) in side.iter().take(n).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        price_str(out, l.price, dec);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(itoa::Buffer::new().format(l.qty).as_bytes());
        out.extend_from_slice(b"\"]");
    }
    out.push(b']');
}

/// Exchange-stream frames for the streams in `streams`, one WebSocket frame
/// each, back to back. A snapshot (the cached last value on subscribe)
/// carries no trade: replaying one would report a trade twice.
pub fn exchange(out: &mut Vec<u8>, streams: u8, t: &Tick, ins: &Instrument, marks: Marks) -> Range<usize> {
    let dec = ins.price_decimals;
    let mut run = frame::Run::default();
    let mut close = |out: &mut Vec<u8>, start: usize| {
        let r = frame::finish(out, start, frame::OP_TEXT);
        run.push(out, r);
    };
    if streams & stream::TRADE != 0 && !marks.snapshot && t.ltq > 0 {
        let start = frame::begin(out);
        exchange_head(out, b"trade", ins);
        int(out, b"\"e\":\"trade\",\"t\":", t.seq);
        // Buyer is the maker when the trade hit the bid (a seller lifted it).
        let maker = t.bid > 0 && t.ltp <= t.bid;
        out.extend_from_slice(if maker { b",\"m\":true,\"p\":" } else { b",\"m\":false,\"p\":" });
        price_str(out, t.ltp, dec);
        int(out, b",\"q\":\"", t.ltq);
        out.push(b'"');
        exchange_tail(out, ins);
        close(out, start);
    }
    if streams & stream::TICKER != 0 {
        let start = frame::begin(out);
        exchange_head(out, b"ticker", ins);
        out.extend_from_slice(b"\"e\":\"ticker\",\"c\":");
        price_str(out, t.ltp, dec);
        out.extend_from_slice(b",\"o\":");
        price_str(out, t.open, dec);
        out.extend_from_slice(b",\"h\":");
        price_str(out, t.high, dec);
        out.extend_from_slice(b",\"l\":");
        price_str(out, t.low, dec);
        int(out, b",\"v\":\"", t.volume);
        out.push(b'"');
        exchange_tail(out, ins);
        close(out, start);
    }
    if streams & stream::DEPTH != 0 {
        let start = frame::begin(out);
        exchange_head(out, b"depth", ins);
        let n = usize::from(t.depth_levels);
        out.extend_from_slice(b"\"e\":\"depth\",\"a\":");
        exchange_side(out, &t.depth.asks, n, dec);
        out.extend_from_slice(b",\"b\":");
        exchange_side(out, &t.depth.bids, n, dec);
        exchange_tail(out, ins);
        close(out, start);
    }
    run.range(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_timestamps() {
        let mut out = Vec::new();
        // 2024-12-19T12:00:00Z = 1734609600 s.
        write_iso(&mut out, 1_734_609_600_123_000_000, 0, true, b"Z");
        assert_eq!(out, b"2024-12-19T12:00:00.123Z");
        out.clear();
        write_iso(&mut out, 1_734_609_600_000_000_000, IST_OFFSET_SECS, false, b"");
        assert_eq!(out, b"2024-12-19T17:30:00");
        out.clear();
        write_iso(&mut out, 951_782_400_000_000_000, 0, false, b"Z"); // leap day 2000
        assert_eq!(out, b"2000-02-29T00:00:00Z");
    }

    #[test]
    fn price_strings_keep_every_decimal() {
        let mut out = Vec::new();
        price_str(&mut out, 100_050, 2);
        price_str(&mut out, 100_000, 2);
        price_str(&mut out, 7, 0);
        assert_eq!(out, br#""1000.50""1000.00""7""#);
    }

    fn instrument(exchange: &str, symbol: &str, dec: u8) -> Instrument {
        Instrument {
            token: 1,
            kite_token: 0,
            exchange: exchange.into(),
            symbol: symbol.into(),
            name: "".into(),
            isin: "".into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: dec,
            ref_price: 0,
        }
    }

    /// The seed's `price_update` entries (`"AAPL"` with OHLC, `"MSFT"` without).
    #[test]
    fn trading_symbol_entries_match_the_seed() {
        let aapl = Tick {
            ltp: 15_025,
            close: 14_975,
            open: 15_000,
            high: 15_100,
            low: 14_950,
            volume: 1_000_000,
            flags: crate::tick::FLAG_OHLC,
            ..Tick::default()
        };
        let msft = Tick { ltp: 38_050, close: 38_170, volume: 2_000_000, ..Tick::default() };
        let cases: [(&str, Tick, Instrument, &str); 4] = [
            (
                "with OHLC: close is the last price",
                aapl,
                instrument("NSE", "AAPL", 2),
                r#""AAPL":{"price":150.25,"change":0.5,"change_pct":0.33,"volume":1000000,"high":151.0,"low":149.5,"open":150.0,"close":150.25}"#,
            ),
            (
                "no OHLC from the feed: the seed's short entry",
                msft,
                instrument("NSE", "MSFT", 2),
                r#""MSFT":{"price":380.5,"change":-1.2,"change_pct":-0.31,"volume":2000000}"#,
            ),
            (
                "no previous close: no change",
                Tick { ltp: 100, ..Tick::default() },
                instrument("NSE", "X", 0),
                r#""X":{"price":100,"change":0,"change_pct":0.0,"volume":0}"#,
            ),
            (
                "other exchanges are prefixed, keys escaped",
                Tick { ltp: 5, ..Tick::default() },
                instrument("BSE", "A\"B", 0),
                r#""BSE:A\"B":{"price":5,"change":0,"change_pct":0.0,"volume":0}"#,
            ),
        ];
        for (label, t, ins, want) in cases {
            let mut out = Vec::new();
            trading_symbol(&mut out, &t, &ins);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{label}");
        }
    }

    #[test]
    fn change_rounds_half_away_from_zero() {
        let t = |ltp, close| Tick { ltp, close, ..Tick::default() };
        assert_eq!(change_bp(&t(245_150, 245_076)), 3); // +0.0302 %
        assert_eq!(change_bp(&t(99_950, 100_000)), -5);
        assert_eq!(change_bp(&t(157_920, 158_000)), -5); // -0.0506 %: was -4
        assert_eq!(change_bp(&t(99_995, 100_000)), -1); // -0.005 % rounds away from zero
        assert_eq!(change_bp(&t(100_004, 100_000)), 0);
        assert_eq!(change_bp(&t(1, 0)), 0);
    }

    /// The frames of an encoded range, parsed one after the other: every
    /// byte of the range belongs to a frame.
    fn frames(bytes: &[u8]) -> Vec<serde_json::Value> {
        payloads(bytes).iter().map(|p| serde_json::from_str(p).expect("each payload is JSON")).collect()
    }

    fn ins(symbol: &str, isin: &str) -> Instrument {
        Instrument {
            token: 2885,
            kite_token: 738561,
            exchange: "NSE".into(),
            symbol: symbol.into(),
            name: "".into(),
            isin: isin.into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: 2,
            ref_price: 0,
        }
    }

    /// The seed's example quote (2024-12-04T10:30:00 IST): the JSON
    /// encoder's sample RELIANCE quote at the seed's time, without token or
    /// seq, its second ask 200 deep.
    fn seed_tick() -> Tick {
        let mut t = Tick { ts_ns: 1_733_288_400_000_000_000, token: 0, seq: 0, ..crate::encode::json::tests::sample() };
        t.depth.asks[1].qty = 200;
        t
    }

    /// Split back-to-back frames into their text payloads.
    fn payloads(mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = frame::frame_len(bytes).expect("whole frames, nothing between them");
            assert_eq!(bytes[0], 0x80 | frame::OP_TEXT, "a final text frame");
            let hl = if bytes[1] == 126 { 4 } else { 2 };
            out.push(String::from_utf8(bytes[hl..n].to_vec()).unwrap());
            bytes = &bytes[n..];
        }
        out
    }

    #[test]
    fn exchange_streams_are_contiguous_frames_with_the_seed_fields() {
        let reg = crate::instrument::Registry::bundled();
        let ins = reg.get(reg.slot_of_symbol("RELIANCE").unwrap());
        let mut t =
            Tick { seq: 12345, ltp: 100_050, ltq: 10, bid: 100_000, ask: 100_100, volume: 500, ..Tick::default() };
        t.depth_levels = 1;
        t.depth.asks[0] = Level { price: 100_100, qty: 50, orders: 1 };
        t.depth.bids[0] = Level { price: 100_000, qty: 30, orders: 1 };
        let all = stream::TRADE | stream::TICKER | stream::DEPTH;
        let mut out = vec![7u8; 3]; // earlier bytes stay untouched
        let r = exchange(&mut out, all, &t, ins, Marks::default());
        assert_eq!(r.end, out.len());
        let f = frames(&out[r]);
        assert_eq!(
            f[0],
            serde_json::json!({"stream":"trade@RELIANCE","data":{"e":"trade","t":12345,"m":false,"p":"1000.50","q":"10","s":"RELIANCE"}})
        );
        assert_eq!(
            (&f[1]["stream"], &f[1]["data"]["c"], &f[1]["data"]["e"]),
            (&"ticker@RELIANCE".into(), &"1000.50".into(), &"ticker".into())
        );
        assert_eq!(
            f[2],
            serde_json::json!({"stream":"depth@RELIANCE","data":{"e":"depth","a":[["1001.00","50"]],"b":[["1000.00","30"]],"s":"RELIANCE"}})
        );
        assert_eq!(f.len(), 3);
        // A snapshot has no trade; a trade stream alone then has nothing.
        let snap = Marks { snapshot: true, conflated: false };
        let r = exchange(&mut out, all, &t, ins, snap);
        assert_eq!(frames(&out[r]).iter().map(|v| v["data"]["e"].clone()).collect::<Vec<_>>(), ["ticker", "depth"]);
        let before = out.len();
        assert!(exchange(&mut out, stream::TRADE, &t, ins, snap).is_empty());
        assert_eq!(out.len(), before, "nothing written");
    }

    /// Every field of `got`, depth first, in order: `(path, value)` for the
    /// leaves, so two messages compare field by field, order included.
    fn fields(v: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    fields(v, &format!("{path}.{k}"), out);
                }
            }
            leaf => out.push((path.to_string(), leaf.clone())),
        }
    }

    fn assert_same_fields(got: &str, want: &str) {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_else(|e| panic!("{e}: {s}"));
        let (mut g, mut w) = (Vec::new(), Vec::new());
        fields(&parse(got), "", &mut g);
        fields(&parse(want), "", &mut w);
        for (i, want) in w.iter().enumerate() {
            assert_eq!(g.get(i), Some(want), "field {} of the fixture, in {got}", i + 1);
        }
        assert_eq!(g.len(), w.len(), "no field beyond the fixture's: {got}");
    }

    /// The seed's Campus `price_update`, verbatim from
    /// `seeds/002_ef8c0bde75f42649.txt` ("Server → Client", "Price Update").
    const CAMPUS_SEED_PRICE_UPDATE: &str = r#"{
  "type": "price_update",
  "instrument_key": "NSE_EQ|INE002A01018",
  "data": {
    "last_price": 2451.50,
    "timestamp": "2026-01-19T10:30:00Z",
    "change_percent": 0.03,
    "volume": 15000
  }
}"#;

    #[test]
    fn campus_price_update_is_the_seeds_example() {
        // 2451.50 last, +0.03 % on a 2450.76 close, at 2026-01-19T10:30:00Z.
        let t =
            Tick { ltp: 245_150, close: 245_076, volume: 15_000, ts_ns: 1_768_818_600_000_000_000, ..Tick::default() };
        let mut out = vec![0xEE; 3];
        let r = campus(&mut out, &t, &ins("RELIANCE", "INE002A01018"));
        assert_eq!(r.end, out.len());
        let got = payloads(&out[r]);
        assert_eq!(got.len(), 1, "one frame");
        assert_same_fields(&got[0], CAMPUS_SEED_PRICE_UPDATE);
    }

    /// The seed's Odin clients (`seeds/000_f0bd5239ca6d871f.txt`, the
    /// JavaScript and Python examples) are the contract for `market_data`:
    /// the seed shows no whole message, only what its clients read:
    ///
    /// ```text
    /// case 'market_data':
    ///     console.log(`📈 ${data.symbol}: ₹${data.data.ltp}`);
    /// if data['type'] == 'market_data':
    ///     print(f"📈 {data['symbol']}: ₹{data['data']['ltp']}")
    /// ```
    ///
    /// Those fields are checked as the seed uses them; the whole message
    /// (this server's additions documented in `dialect::odin`) is fixed too.
    #[test]
    fn odin_market_data_has_what_the_seeds_clients_read() {
        let mut out = Vec::new();
        let r = odin(&mut out, Mode::Quote, &Tick { token: 2885, ..seed_tick() }, &ins("RELIANCE", "INE002A01018"));
        let got = payloads(&out[r]);
        assert_eq!(got.len(), 1, "one frame");
        let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(v["type"], "market_data");
        assert_eq!(v["symbol"], "RELIANCE");
        assert_eq!(v["data"]["ltp"].as_f64(), Some(2850.5), "data.ltp is a number: {v}");
        assert_same_fields(
            &got[0],
            r#"{"type":"market_data","symbol":"RELIANCE","token":"2885","exchange":"NSE","timestamp":"2024-12-04T05:00:00.000Z","data":{"ltp":2850.5,"change":2.25,"change_percent":0.08,"volume":1500000,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"bid":2850.45,"ask":2850.55}}"#,
        );
    }

    const QUOTE: &str = r#""ltp":2850.5,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"volume":1500000,"bid":2850.45,"ask":2850.55,"bid_qty":500,"ask_qty":750,"oi":0,"prev_oi":0,"last_trade_quantity":10,"change":2.25,"change_percent":0.08"#;

    #[test]
    fn openalgo_frames_per_mode_set() {
        let head = r#"{"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":"#;
        let ts = r#""timestamp":"2024-12-04T10:30:00"}}"#;
        let ltp = format!(r#"{head}1,"data":{{"ltp":2850.5,{ts}"#);
        let quote = format!(r#"{head}2,"data":{{{QUOTE},{ts}"#);
        let book = r#""depth":{"buy":[{"price":2850.45,"quantity":500,"orders":3},{"price":2850.4,"quantity":100,"orders":1}],"sell":[{"price":2850.55,"quantity":750,"orders":4},{"price":2850.6,"quantity":200,"orders":2}]}"#;
        let depth = format!(r#"{head}3,"data":{{{QUOTE},{book},{ts}"#);
        use openalgo_mode::{DEPTH, LTP, QUOTE as Q};
        let cases: &[(&str, u8, Vec<&String>)] = &[
            ("LTP: ltp and timestamp", LTP, vec![&ltp]),
            ("Quote: the seed's fields and the SDK's", Q, vec![&quote]),
            ("Depth: the quote and the book", DEPTH, vec![&depth]),
            ("LTP + Quote: two frames, LTP first", LTP | Q, vec![&ltp, &quote]),
            ("every mode: three frames in mode order", LTP | Q | DEPTH, vec![&ltp, &quote, &depth]),
        ];
        let (t, ins) = (seed_tick(), ins("RELIANCE", "INE002A01018"));
        for (label, modes, want) in cases {
            let mut out = vec![0xEE; 3]; // frames appended after earlier bytes
            let r = openalgo(&mut out, *modes, &t, &ins);
            assert_eq!(r.end, out.len(), "{label}");
            let got = payloads(&out[r]);
            assert_eq!(got.iter().collect::<Vec<_>>(), *want, "{label}");
            for p in &got {
                serde_json::from_str::<serde_json::Value>(p).unwrap_or_else(|e| panic!("{label}: {e}: {p}"));
            }
        }
    }

    #[test]
    fn openalgo_indices_are_on_the_index_segment() {
        let mut out = Vec::new();
        let r = openalgo(&mut out, openalgo_mode::LTP, &seed_tick(), &ins("NIFTY", ""));
        let p = &payloads(&out[r])[0];
        assert!(p.starts_with(r#"{"type":"market_data","symbol":"NIFTY","exchange":"NSE_INDEX","mode":1,"#), "{p}");
    }

    #[test]
    fn openalgo_change_is_zero_without_a_close() {
        let mut out = Vec::new();
        let t = Tick { close: 0, ..seed_tick() };
        let r = openalgo(&mut out, openalgo_mode::QUOTE, &t, &ins("RELIANCE", "INE002A01018"));
        let v: serde_json::Value = serde_json::from_str(&payloads(&out[r])[0]).unwrap();
        assert_eq!((v["data"]["change"].as_f64(), v["data"]["change_percent"].as_f64()), (Some(0.0), Some(0.0)));
    }
}
