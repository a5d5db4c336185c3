//! Native binary `market_data` frames: one rkyv 0.8 archived struct per
//! binary WebSocket message, readable in place with `rkyv::access`.
//!
//! Three layouts share a 32-byte header whose `mode` byte (offset 4) says
//! which one follows; every field is little-endian and naturally aligned,
//! so a non-Rust client reads them with fixed offsets. The byte-by-byte
//! layout is in `docs/rkyv-layout.md` and pinned by tests here and in
//! `tests/`. Changing any of these structs changes the wire: bump
//! [`WIRE_VERSION`].

use std::cell::RefCell;
use std::ops::Range;

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::Marks;
use crate::instrument::Instrument;
use crate::tick::{Level, Mode, Tick, DEPTH_LEVELS};
use crate::ws::frame;

/// Layout version carried in every header.
pub const WIRE_VERSION: u8 = 1;
/// `WireHeader::flags` bit: this frame is the snapshot sent on subscribe.
pub const WIRE_SNAPSHOT: u8 = 1 << 0;
/// `WireHeader::flags` bit: earlier ticks were dropped for this client.
pub const WIRE_CONFLATED: u8 = 1 << 1;

/// Common header: the whole frame in ltp mode (32 bytes).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WireHeader {
    /// Instrument token.
    pub token: u32,
    /// 1 ltp, 2 quote, 3 depth: which layout this frame is.
    pub mode: u8,
    /// `WIRE_*` flag bits.
    pub flags: u8,
    /// Price scale: `price = raw / 10^price_decimals`.
    pub price_decimals: u8,
    /// [`WIRE_VERSION`].
    pub version: u8,
    /// Per-instrument sequence number.
    pub seq: u64,
    /// Source timestamp, ns since epoch.
    pub ts_ns: u64,
    /// Last traded price, minor units.
    pub ltp: i64,
}

/// Quote mode (112 bytes).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WireQuote {
    /// Header (mode 2, or 3 inside a depth frame).
    pub h: WireHeader,
    /// Last traded quantity.
    pub ltq: u32,
    /// Best bid quantity.
    pub bid_qty: u32,
    /// Best ask quantity.
    pub ask_qty: u32,
    /// Valid depth levels per side (0 outside depth mode).
    pub depth_levels: u32,
    /// Cumulative volume.
    pub volume: u64,
    /// Best bid, minor units.
    pub bid: i64,
    /// Best ask, minor units.
    pub ask: i64,
    /// Open, minor units.
    pub open: i64,
    /// High, minor units.
    pub high: i64,
    /// Low, minor units.
    pub low: i64,
    /// Previous close, minor units.
    pub close: i64,
    /// Open interest.
    pub oi: u64,
}

/// One book level (16 bytes).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WireLevel {
    /// Price, minor units.
    pub price: i64,
    /// Quantity.
    pub qty: u32,
    /// Orders.
    pub orders: u32,
}

/// Depth mode (272 bytes).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct WireDepth {
    /// Quote part (header mode 3).
    pub q: WireQuote,
    /// Bids, best first; `q.depth_levels` valid.
    pub bids: [WireLevel; DEPTH_LEVELS],
    /// Asks, best first; `q.depth_levels` valid.
    pub asks: [WireLevel; DEPTH_LEVELS],
}

fn header(mode: Mode, t: &Tick, ins: &Instrument, marks: Marks) -> WireHeader {
    let mut flags = 0;
    if marks.snapshot {
        flags |= WIRE_SNAPSHOT;
    }
    if marks.conflated {
        flags |= WIRE_CONFLATED;
    }
    WireHeader {
        token: t.token,
        mode: mode as u8,
        flags,
        price_decimals: ins.price_decimals,
        version: WIRE_VERSION,
        seq: t.seq,
        ts_ns: t.ts_ns,
        ltp: t.ltp,
    }
}

fn quote(h: WireHeader, t: &Tick, depth_levels: u32) -> WireQuote {
    WireQuote {
        h,
        ltq: t.ltq,
        bid_qty: t.bid_qty,
        ask_qty: t.ask_qty,
        depth_levels,
        volume: t.volume,
        bid: t.bid,
        ask: t.ask,
        open: t.open,
        high: t.high,
        low: t.low,
        close: t.close,
        oi: t.oi,
    }
}

fn levels(side: &[Level; DEPTH_LEVELS], n: usize) -> [WireLevel; DEPTH_LEVELS] {
    std::array::from_fn(|i| {
        if i < n {
            WireLevel { price: side[i].price, qty: side[i].qty, orders: side[i].orders }
        } else {
            WireLevel::default()
        }
    })
}

thread_local! {
    /// Reused serialization buffer: rkyv aligns relative to the buffer start,
    /// so archive into an aligned scratch and copy the bytes into the frame.
    static SCRATCH: RefCell<AlignedVec> = RefCell::new(AlignedVec::with_capacity(512));
}

fn archive<T>(value: &T, out: &mut Vec<u8>)
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Failure>,
    >,
{
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let taken = std::mem::take(buf);
        let filled = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Failure>(value, taken)
            .expect("archiving plain integers into a Vec cannot fail");
        out.extend_from_slice(&filled);
        *buf = filled;
    });
}

/// Append a binary `market_data` frame; returns its range in `out`.
pub fn market_data(out: &mut Vec<u8>, mode: Mode, t: &Tick, ins: &Instrument, marks: Marks) -> Range<usize> {
    let start = frame::begin(out);
    let h = header(mode, t, ins, marks);
    match mode {
        Mode::Ltp => archive(&h, out),
        Mode::Quote => archive(&quote(h, t, 0), out),
        Mode::Depth => {
            let n = usize::from(t.depth_levels).min(DEPTH_LEVELS);
            let d =
                WireDepth { q: quote(h, t, n as u32), bids: levels(&t.depth.bids, n), asks: levels(&t.depth.asks, n) };
            archive(&d, out)
        }
    }
    frame::finish(out, start, frame::OP_BINARY)
}

/// Size in bytes of the archived frame payload for `mode`.
pub const fn payload_len(mode: Mode) -> usize {
    match mode {
        Mode::Ltp => std::mem::size_of::<ArchivedWireHeader>(),
        Mode::Quote => std::mem::size_of::<ArchivedWireQuote>(),
        Mode::Depth => std::mem::size_of::<ArchivedWireDepth>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::Registry;

    fn frame_payload(mode: Mode) -> AlignedVec {
        let reg = Registry::bundled();
        let ins = reg.get(reg.slot_of_token(2885).unwrap());
        let mut t = Tick {
            token: 2885,
            seq: 7,
            ts_ns: 99,
            ltp: 285050,
            volume: 5,
            bid: 1,
            ask: 2,
            oi: 3,
            depth_levels: 5,
            ..Tick::default()
        };
        t.depth.asks[4] = Level { price: 42, qty: 43, orders: 44 };
        let mut out = Vec::new();
        let r = market_data(&mut out, mode, &t, ins, Marks { snapshot: true, conflated: false });
        let f = &out[r];
        assert_eq!(f[0], 0x82, "final binary frame");
        let hl = if f[1] == 126 { 4 } else { 2 };
        let mut a = AlignedVec::<16>::new();
        a.extend_from_slice(&f[hl..]);
        a
    }

    #[test]
    fn layout_sizes_are_stable() {
        assert_eq!(payload_len(Mode::Ltp), 32);
        assert_eq!(payload_len(Mode::Quote), 112);
        assert_eq!(payload_len(Mode::Depth), 272);
        for m in Mode::ALL {
            assert_eq!(frame_payload(m).len(), payload_len(m), "{m:?}");
        }
    }

    #[test]
    fn frames_are_readable_in_place() {
        let p = frame_payload(Mode::Depth);
        let d = rkyv::access::<ArchivedWireDepth, rkyv::rancor::Error>(&p).unwrap();
        assert_eq!(d.q.h.token, 2885);
        assert_eq!(d.q.h.mode, 3);
        assert_eq!(d.q.h.flags, WIRE_SNAPSHOT);
        assert_eq!(d.q.h.ltp, 285050);
        assert_eq!(d.asks[4].orders, 44);
        // And at the documented fixed offsets, little-endian:
        assert_eq!(u32::from_le_bytes(p[0..4].try_into().unwrap()), 2885);
        assert_eq!(p[4], 3);
        assert_eq!(p[6], 2, "price_decimals");
        assert_eq!(p[7], WIRE_VERSION);
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()), 7);
        assert_eq!(i64::from_le_bytes(p[24..32].try_into().unwrap()), 285050);
        assert_eq!(u32::from_le_bytes(p[44..48].try_into().unwrap()), 5, "depth_levels");
        assert_eq!(u64::from_le_bytes(p[48..56].try_into().unwrap()), 5, "volume");
        assert_eq!(u64::from_le_bytes(p[104..112].try_into().unwrap()), 3, "oi");
        assert_eq!(i64::from_le_bytes(p[256..264].try_into().unwrap()), 42, "asks[4].price");
        assert_eq!(u32::from_le_bytes(p[268..272].try_into().unwrap()), 44, "asks[4].orders");
    }
}
