//! What a reader hands out: events, gaps, the writer's state, instruments,
//! and the zero-copy [`TickView`] of a record in place.

use std::sync::atomic::Ordering;

use crate::tick::{Level, Tick, TickCell};

/// An instrument, as the region's table describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrument {
    /// Exchange token.
    pub token: u32,
    /// Its slot (`Tick::slot`).
    pub slot: u32,
    /// Exchange code.
    pub exchange: String,
    /// Trading symbol.
    pub symbol: String,
    /// price = raw / 10^price_decimals.
    pub price_decimals: u8,
    /// Lot size.
    pub lot_size: u32,
    /// Tick size, minor units.
    pub tick_size: i64,
}

impl Instrument {
    /// A raw fixed-point price as a decimal string (`285050` → `2850.5`).
    pub fn price(&self, raw: i64) -> String {
        let mut out = Vec::new();
        crate::tick::write_price(&mut out, raw, self.price_decimals);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Records the writer overwrote before this reader could take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The ring (feed) that lapped the reader.
    pub ring: usize,
    /// Its feed's name.
    pub feed: String,
    /// First position lost.
    pub from_pos: u64,
    /// The reader carries on from here (positions `from_pos..to_pos` lost).
    pub to_pos: u64,
}

impl Gap {
    /// Records lost.
    pub fn lost(&self) -> u64 {
        self.to_pos - self.from_pos
    }
}

/// Why the writer is not writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    /// The server stopped and closed the region.
    Closed,
    /// No heartbeat for this long (the server died or hangs).
    Silent {
        /// Milliseconds since its last heartbeat.
        for_ms: u64,
    },
    /// A new region appeared at the path but cannot be read (the message says why).
    Unusable(String),
}

/// What a reader gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An instrument's current value from the last-value table: after
    /// attaching, and after a gap (then `prev_seq` is the last `seq` this
    /// reader had for it: ticks after `prev_seq` and before `tick.seq` were
    /// lost; 0 when it had none).
    Snapshot {
        /// The value.
        tick: Tick,
        /// The newest `seq` given before, for this instrument.
        prev_seq: u64,
    },
    /// A tick from a ring, in publication order.
    Tick(Tick),
    /// The writer lapped this reader; snapshots of what changed follow.
    Gap(Gap),
    /// The writer stopped; the reader waits for a new one (reported once).
    WriterDown(Down),
    /// A new server's region (a new epoch): snapshots follow, then its ticks.
    Reattached {
        /// The new epoch.
        epoch: u64,
    },
}

/// What [`Reader::read_with`](super::Reader::read_with) returns.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // events carry ticks by value: boxing them would allocate per tick
pub enum Read<R> {
    /// The closure's result over a record that stayed whole while it ran.
    Tick(R),
    /// Something other than a live tick.
    Event(Event),
    /// Nothing ready.
    Empty,
}

/// A ring record in place: each accessor is one atomic load from the
/// mapping. Values read through a view are only trustworthy once
/// [`Reader::read_with`](super::Reader::read_with) returns them.
pub struct TickView<'a> {
    pub(super) cell: &'a TickCell,
}

macro_rules! word_of {
    ($f:ident) => {
        std::mem::offset_of!(Tick, $f) / 8
    };
}

impl TickView<'_> {
    #[inline]
    fn w(&self, i: usize) -> u64 {
        self.cell.tick[i].load(Ordering::Relaxed)
    }
    /// Exchange token.
    #[inline]
    pub fn token(&self) -> u32 {
        self.w(word_of!(token)) as u32
    }
    /// Registry slot.
    #[inline]
    pub fn slot(&self) -> u32 {
        (self.w(word_of!(slot)) >> 32) as u32
    }
    /// Per-instrument sequence number.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.w(word_of!(seq))
    }
    /// Source timestamp, ns.
    #[inline]
    pub fn ts_ns(&self) -> u64 {
        self.w(word_of!(ts_ns))
    }
    /// When the server's feed received it, ns.
    #[inline]
    pub fn ts_recv_ns(&self) -> u64 {
        self.w(word_of!(ts_recv_ns))
    }
    /// Last traded price, minor units.
    #[inline]
    pub fn ltp(&self) -> i64 {
        self.w(word_of!(ltp)) as i64
    }
    /// Cumulative volume.
    #[inline]
    pub fn volume(&self) -> u64 {
        self.w(word_of!(volume))
    }
    /// Best bid, minor units.
    #[inline]
    pub fn bid(&self) -> i64 {
        self.w(word_of!(bid)) as i64
    }
    /// Best ask, minor units.
    #[inline]
    pub fn ask(&self) -> i64 {
        self.w(word_of!(ask)) as i64
    }
    /// Session open, minor units.
    #[inline]
    pub fn open(&self) -> i64 {
        self.w(word_of!(open)) as i64
    }
    /// Session high, minor units.
    #[inline]
    pub fn high(&self) -> i64 {
        self.w(word_of!(high)) as i64
    }
    /// Session low, minor units.
    #[inline]
    pub fn low(&self) -> i64 {
        self.w(word_of!(low)) as i64
    }
    /// Previous close, minor units.
    #[inline]
    pub fn close(&self) -> i64 {
        self.w(word_of!(close)) as i64
    }
    /// Open interest.
    #[inline]
    pub fn oi(&self) -> u64 {
        self.w(word_of!(oi))
    }
    /// Last traded quantity.
    #[inline]
    pub fn ltq(&self) -> u32 {
        self.w(word_of!(ltq)) as u32
    }
    /// Quantity at the best bid.
    #[inline]
    pub fn bid_qty(&self) -> u32 {
        (self.w(word_of!(bid_qty)) >> 32) as u32
    }
    /// Quantity at the best ask.
    #[inline]
    pub fn ask_qty(&self) -> u32 {
        self.w(word_of!(ask_qty)) as u32
    }
    /// `FLAG_*` bits.
    #[inline]
    pub fn flags(&self) -> u8 {
        (self.w(word_of!(flags)) >> 32) as u8
    }
    /// Valid depth levels per side.
    #[inline]
    pub fn depth_levels(&self) -> u8 {
        (self.w(word_of!(depth_levels)) >> 40) as u8
    }
    /// Bid level `i` (0 = best), if `i < 5`.
    pub fn bid_level(&self, i: usize) -> Option<Level> {
        (i < crate::tick::DEPTH_LEVELS).then(|| self.level(std::mem::offset_of!(Tick, depth) / 8 + 2 * i))
    }
    /// Ask level `i` (0 = best), if `i < 5`.
    pub fn ask_level(&self, i: usize) -> Option<Level> {
        (i < crate::tick::DEPTH_LEVELS)
            .then(|| self.level(std::mem::offset_of!(Tick, depth) / 8 + 2 * (crate::tick::DEPTH_LEVELS + i)))
    }
    fn level(&self, word: usize) -> Level {
        let qo = self.w(word + 1);
        Level { price: self.w(word) as i64, qty: qo as u32, orders: (qo >> 32) as u32 }
    }
    /// The whole tick, copied (for the fields without an accessor).
    pub fn tick(&self) -> Tick {
        self.cell.get()
    }
}

const _: () = {
    assert!(std::mem::offset_of!(Tick, token) == 0 && std::mem::offset_of!(Tick, slot) == 4);
    assert!(std::mem::offset_of!(Tick, ltq) == 112 && std::mem::offset_of!(Tick, bid_qty) == 116);
    assert!(std::mem::offset_of!(Tick, ask_qty) == 120 && std::mem::offset_of!(Tick, flags) == 124);
    assert!(std::mem::offset_of!(Tick, depth_levels) == 125);
    assert!(std::mem::offset_of!(Tick, depth) % 8 == 0 && std::mem::size_of::<Level>() == 16);
};
