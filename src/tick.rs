//! The normalised tick: what every feed decodes to and every encoder reads.
//!
//! `Tick` is `#[repr(C)]`, `Copy` and `Pod` (no padding, every bit pattern
//! valid) so it can travel through the SPSC rings by value and be stored in
//! the last-value cache as plain words. Prices are fixed-point integers in
//! minor units; the scale (`price_decimals`) belongs to the instrument, not
//! the tick. Timestamps are nanoseconds since the Unix epoch.

use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};

/// Number of depth levels carried per side.
pub const DEPTH_LEVELS: usize = 5;

/// `Tick::flags` bit: bid/ask fields are valid.
pub const FLAG_QUOTE: u8 = 1 << 0;
/// `Tick::flags` bit: open/high/low/close are valid.
pub const FLAG_OHLC: u8 = 1 << 1;
/// `Tick::flags` bit: open interest fields are valid.
pub const FLAG_OI: u8 = 1 << 2;
/// `Tick::flags` bit: `depth` holds `depth_levels` valid levels.
pub const FLAG_DEPTH: u8 = 1 << 3;

/// One price level of the order book.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Level {
    /// Price in minor units.
    pub price: i64,
    /// Total quantity at this price.
    pub qty: u32,
    /// Number of orders at this price.
    pub orders: u32,
}

/// Five levels a side, best first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Depth {
    /// Bids, highest price first.
    pub bids: [Level; DEPTH_LEVELS],
    /// Asks, lowest price first.
    pub asks: [Level; DEPTH_LEVELS],
}

/// The newest state of one instrument: last trade, quote, OHLC, OI, depth.
///
/// Feeds merge partial updates (a TCF1 depth record, say) into the previous
/// state, so every `Tick` in a ring or the cache is complete.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Tick {
    /// Exchange instrument token.
    pub token: u32,
    /// Dense registry slot of `token` (set by the feed from the registry).
    pub slot: u32,
    /// Per-instrument sequence number from the source; strictly increasing.
    pub seq: u64,
    /// Source (exchange) timestamp, ns since epoch.
    pub ts_ns: u64,
    /// When the feed thread received it, ns since epoch.
    pub ts_recv_ns: u64,
    /// Last traded price, minor units.
    pub ltp: i64,
    /// Cumulative traded volume.
    pub volume: u64,
    /// Best bid, minor units.
    pub bid: i64,
    /// Best ask, minor units.
    pub ask: i64,
    /// Session open, minor units.
    pub open: i64,
    /// Session high, minor units.
    pub high: i64,
    /// Session low, minor units.
    pub low: i64,
    /// Previous close, minor units.
    pub close: i64,
    /// Open interest.
    pub oi: u64,
    /// Previous open interest.
    pub prev_oi: u64,
    /// Last traded quantity.
    pub ltq: u32,
    /// Quantity at best bid.
    pub bid_qty: u32,
    /// Quantity at best ask.
    pub ask_qty: u32,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Valid levels per side in `depth`, 0..=5.
    pub depth_levels: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 2],
    /// Order book, `depth_levels` valid levels per side.
    pub depth: Depth,
}

/// Size of a `Tick` in 8-byte words (the seqlock copies it word by word).
pub const TICK_WORDS: usize = std::mem::size_of::<Tick>() / 8;
const _: () = assert!(std::mem::size_of::<Tick>() % 8 == 0);
const _: () = assert!(std::mem::align_of::<Tick>() == 8);

/// A tick behind a sequence word, on its own cache lines: the entry of the
/// last-value cache, and the record of a shared-memory ring (where the
/// word is the record's publication stamp). Only atomics, so it may be
/// shared with threads and, mapped, with other processes.
///
/// Layout (a documented contract, `docs/shm-layout.md`): the word at byte
/// 0, the tick's 36 words at 8..296, zero padding to 320.
#[repr(C, align(64))]
pub struct TickCell {
    /// Last-value cache: even = stable, odd = a write is in progress,
    /// incremented twice per write. Ring record: its publication stamp.
    pub word: AtomicU64,
    /// The tick as words (`Tick` is `Pod`).
    pub tick: [AtomicU64; TICK_WORDS],
}

/// Bytes per [`TickCell`].
pub const CELL_SIZE: usize = std::mem::size_of::<TickCell>();
const _: () = assert!(CELL_SIZE == 320 && std::mem::offset_of!(TickCell, tick) == 8);

impl Default for TickCell {
    /// All zero: version 0 / stamp 0, an empty tick.
    fn default() -> TickCell {
        TickCell { word: AtomicU64::new(0), tick: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl TickCell {
    /// Write `tick`'s words (Relaxed; the caller's seqlock orders them).
    #[inline]
    pub fn put(&self, tick: &Tick) {
        let src: &[u64; TICK_WORDS] = bytemuck::cast_ref(tick);
        for (w, s) in self.tick.iter().zip(src) {
            w.store(*s, Ordering::Relaxed);
        }
    }

    /// Read the tick's words (Relaxed; the caller's seqlock validates them).
    #[inline]
    pub fn get(&self) -> Tick {
        let mut out = [0u64; TICK_WORDS];
        for (o, w) in out.iter_mut().zip(&self.tick) {
            *o = w.load(Ordering::Relaxed);
        }
        bytemuck::cast(out)
    }
}

/// Subscription mode: how much of a tick a subscriber wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Last traded price only.
    Ltp = 1,
    /// Quote: trade, best bid/ask, OHLC, volume, OI.
    Quote = 2,
    /// Quote plus five levels of depth.
    Depth = 3,
}

impl Mode {
    /// Every mode, in wire order.
    pub const ALL: [Mode; 3] = [Mode::Ltp, Mode::Quote, Mode::Depth];

    /// Parse the protocol's mode name (`ltp`, `quote`, `depth`), any case.
    pub fn parse(s: &str) -> Option<Mode> {
        if s.eq_ignore_ascii_case("ltp") {
            Some(Mode::Ltp)
        } else if s.eq_ignore_ascii_case("quote") {
            Some(Mode::Quote)
        } else if s.eq_ignore_ascii_case("depth") || s.eq_ignore_ascii_case("full") {
            Some(Mode::Depth)
        } else {
            None
        }
    }

    /// The protocol's name for this mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ltp => "ltp",
            Mode::Quote => "quote",
            Mode::Depth => "depth",
        }
    }
}

/// Write a fixed-point price as a JSON number: `285050` at 2 decimals is
/// `2850.5`, `282000` is `2820.0`. Exact (no floating point), no allocation.
pub fn write_price(out: &mut Vec<u8>, raw: i64, decimals: u8) {
    let mut ibuf = itoa::Buffer::new();
    if decimals == 0 {
        out.extend_from_slice(ibuf.format(raw).as_bytes());
        return;
    }
    let scale = 10u64.pow(u32::from(decimals.min(18)));
    let abs = raw.unsigned_abs();
    if raw < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(ibuf.format(abs / scale).as_bytes());
    out.push(b'.');
    let mut frac = abs % scale;
    let mut digits = decimals.min(18);
    // Trim trailing zeros but keep one digit: 2820.0, 2850.5, 2848.25.
    while digits > 1 && frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let s = ibuf.format(frac);
    for _ in s.len()..usize::from(digits) {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

/// `d` in nanoseconds (saturating): the worker's clock is `u64` ns.
#[inline]
pub fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Wall-clock now, ns since the Unix epoch (CLOCK_REALTIME via the vDSO).
/// Feeds stamp with it and workers read it once per loop turn.
#[inline]
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_word_sized_and_padding_free() {
        assert_eq!(std::mem::size_of::<Tick>(), 288);
        assert_eq!(TICK_WORDS, 36);
    }

    #[test]
    fn prices_format_exactly() {
        let cases: &[(&str, i64, u8, &str)] = &[
            ("half", 285050, 2, "2850.5"),
            ("whole keeps one zero", 282000, 2, "2820.0"),
            ("two decimals", 284825, 2, "2848.25"),
            ("leading zero fraction", 100005, 2, "1000.05"),
            ("below one", 5, 2, "0.05"),
            ("negative", -1505, 2, "-15.05"),
            ("zero", 0, 2, "0.0"),
            ("no decimals", 42, 0, "42"),
            ("four decimals", 12345678, 4, "1234.5678"),
        ];
        for (label, raw, dec, want) in cases {
            let mut out = Vec::new();
            write_price(&mut out, *raw, *dec);
            assert_eq!(std::str::from_utf8(&out).unwrap(), *want, "{label}");
        }
    }

    #[test]
    fn modes_parse_any_case() {
        assert_eq!(Mode::parse("LTP"), Some(Mode::Ltp));
        assert_eq!(Mode::parse("Quote"), Some(Mode::Quote));
        assert_eq!(Mode::parse("depth"), Some(Mode::Depth));
        assert_eq!(Mode::parse("full"), Some(Mode::Depth));
        assert_eq!(Mode::parse("bogus"), None);
    }
}
