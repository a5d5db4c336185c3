//! Encoders: a tick becomes a complete WebSocket frame (header + payload)
//! once per (tick, encoding), and the same bytes go to every subscriber.
//!
//! An *encoding* is the data format and mode a subscription asked for
//! (native JSON or rkyv, × ltp / quote / depth). [`FrameCache`] holds the
//! frames built for the tick being fanned out, so the first subscriber of
//! an encoding pays for the encode and the rest only copy bytes.

pub mod dialects;
pub mod json;
pub mod rkyv;

use std::ops::Range;

use crate::instrument::Instrument;
use crate::tick::{Mode, Tick};

/// Data frame format of a subscription: the native formats chosen at
/// connect time (`format=`), or the market-data shape of a seed dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Native JSON text frames.
    Json,
    /// Native rkyv-archived binary frames (see `docs/rkyv-layout.md`).
    Rkyv,
    /// Odin `market_data` (seed `000_…`).
    Odin,
    /// Campus `price_update` (seed `002_…`).
    Campus,
    /// OpenAlgo `market_data` (seed `003_…`): one frame per mode in the set
    /// (`dialects::openalgo_mode::LTP | QUOTE | DEPTH` bits, never 0), as
    /// an OpenAlgo client may hold one instrument in several modes.
    OpenAlgo(u8),
    /// Exchange streams (seed `004_…`): one frame per stream in the set
    /// (`exchange::TRADE | TICKER | DEPTH` bits, never 0).
    Exchange(u8),
    /// Trading WS (seed `001_…`): never encoded per tick; the worker batches
    /// changed instruments into one `price_update` per interval.
    Batched,
    /// Kite ticker packets (`crate::kite`): encoded once per tick and mode
    /// as one length-prefixed *packet*, not a frame; a connection gathers
    /// the packets of one turn into one binary frame (`Conn::data_packet`).
    Kite,
}

impl Format {
    /// Parse the native `format=` parameter: `json` / `rkyv`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "rkyv" | "binary" => Some(Format::Rkyv),
            _ => None,
        }
    }

    /// Protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Rkyv => "rkyv",
            Format::Odin => "odin",
            Format::Campus => "campus",
            Format::OpenAlgo(_) => "openalgo",
            Format::Exchange(_) => "exchange",
            Format::Batched => "batched",
            Format::Kite => "kite",
        }
    }
}

/// Format × mode of one subscription: which cached frame it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Data format.
    pub format: Format,
    /// Subscription mode.
    pub mode: Mode,
}

/// Formats with one frame per mode (index `f * 3 + mode - 1`).
const PER_MODE: usize = 5;
/// Non-empty sets of three bits (OpenAlgo modes, exchange streams).
const SETS: usize = 7;

impl Encoding {
    /// Number of distinct encodings (size of the per-tick cache): five
    /// formats × three modes, then the seven non-empty OpenAlgo mode sets,
    /// then the seven non-empty exchange stream sets.
    pub const COUNT: usize = PER_MODE * 3 + 2 * SETS;

    /// Dense index `0..COUNT` (`Batched` is never cached and maps to 0).
    #[inline]
    pub fn index(self) -> usize {
        let per_mode = |f: usize| f * 3 + (self.mode as usize - 1);
        match self.format {
            Format::Json | Format::Batched => per_mode(0),
            Format::Rkyv => per_mode(1),
            Format::Odin => per_mode(2),
            Format::Campus => per_mode(3),
            Format::Kite => per_mode(4),
            Format::OpenAlgo(modes) => PER_MODE * 3 + (modes as usize & 7).max(1) - 1,
            Format::Exchange(streams) => PER_MODE * 3 + SETS + (streams as usize & 7).max(1) - 1,
        }
    }
}

/// Per-frame markers that make a frame specific to one client (so it is
/// encoded for that client, off the shared path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// First frame after subscribing: the cached last value.
    pub snapshot: bool,
    /// Earlier ticks were dropped for this client (conflation or rate cap).
    pub conflated: bool,
}

/// Encode `tick` as a complete frame appended to `out` (a Kite packet:
/// see [`Format::Kite`]); returns its range.
/// An empty range means the format has nothing to send for this tick
/// (an exchange trade stream's snapshot, a batched subscription).
pub fn encode(out: &mut Vec<u8>, enc: Encoding, tick: &Tick, ins: &Instrument, marks: Marks) -> Range<usize> {
    match enc.format {
        Format::Json => json::market_data(out, enc.mode, tick, ins, marks),
        Format::Rkyv => rkyv::market_data(out, enc.mode, tick, ins, marks),
        Format::Odin => dialects::odin(out, enc.mode, tick, ins),
        Format::Campus => dialects::campus(out, tick, ins),
        Format::OpenAlgo(modes) => dialects::openalgo(out, modes, tick, ins),
        Format::Exchange(streams) => dialects::exchange(out, streams, tick, ins, marks),
        Format::Batched => out.len()..out.len(),
        Format::Kite => crate::kite::write_packet(out, enc.mode, tick, ins),
    }
}

// `FrameCache::built` has one bit per encoding.
const _: () = assert!(Encoding::COUNT <= 32);

/// Frames of the current tick, built on first use per encoding.
#[derive(Default)]
pub struct FrameCache {
    buf: Vec<u8>,
    /// Bit `i`: `ranges[i]` holds this tick's frame in encoding `i`.
    built: u32,
    ranges: [Range<usize>; Encoding::COUNT],
}

impl FrameCache {
    /// Forget the previous tick's frames (keeps the buffer's capacity).
    #[inline]
    pub fn reset(&mut self) {
        self.buf.clear();
        self.built = 0;
    }

    /// The frame of `tick` in `enc`, encoding it if this is its first use.
    #[inline]
    pub fn get(&mut self, enc: Encoding, tick: &Tick, ins: &Instrument) -> &[u8] {
        let i = enc.index();
        if self.built & (1 << i) == 0 {
            self.ranges[i] = encode(&mut self.buf, enc, tick, ins, Marks::default());
            self.built |= 1 << i;
        }
        &self.buf[self.ranges[i].clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_indices_are_dense_and_distinct() {
        let mut seen = [false; Encoding::COUNT];
        for format in [Format::Json, Format::Rkyv, Format::Odin, Format::Campus, Format::Kite] {
            for mode in Mode::ALL {
                let i = Encoding { format, mode }.index();
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        for bits in 1..=7 {
            for format in [Format::OpenAlgo(bits), Format::Exchange(bits)] {
                let i = Encoding { format, mode: Mode::Ltp }.index();
                assert!(!seen[i], "{format:?}");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
