//! Encoders: a tick becomes a complete WebSocket frame (header + payload)
//! once per (tick, encoding), and the same bytes go to every subscriber.
//!
//! An *encoding* is the data format and mode a subscription asked for
//! (native JSON or rkyv, × ltp / quote / depth). [`FrameCache`] holds the
//! frames built for the tick being fanned out, so the first subscriber of
//! an encoding pays for the encode and the rest only copy bytes.

pub mod json;
pub mod rkyv;

use std::ops::Range;

use crate::instrument::Instrument;
use crate::tick::{Mode, Tick};

/// Data frame format chosen at connect time (`format=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON text frames.
    Json,
    /// rkyv-archived binary frames (see `docs/rkyv-layout.md`).
    Rkyv,
}

impl Format {
    /// Parse `json` / `rkyv`.
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

impl Encoding {
    /// Number of distinct encodings (size of the per-tick cache).
    pub const COUNT: usize = 6;

    /// Dense index `0..COUNT`.
    #[inline]
    pub fn index(self) -> usize {
        (self.format as usize) * 3 + (self.mode as usize - 1)
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

/// Encode `tick` as a complete frame appended to `out`; returns its range.
pub fn encode(out: &mut Vec<u8>, enc: Encoding, tick: &Tick, ins: &Instrument, marks: Marks) -> Range<usize> {
    match enc.format {
        Format::Json => json::market_data(out, enc.mode, tick, ins, marks),
        Format::Rkyv => rkyv::market_data(out, enc.mode, tick, ins, marks),
    }
}

/// Frames of the current tick, built on first use per encoding.
#[derive(Default)]
pub struct FrameCache {
    buf: Vec<u8>,
    built: [Option<Range<usize>>; Encoding::COUNT],
}

impl FrameCache {
    /// Forget the previous tick's frames (keeps the buffer's capacity).
    #[inline]
    pub fn reset(&mut self) {
        self.buf.clear();
        self.built = Default::default();
    }

    /// The frame of `tick` in `enc`, encoding it if this is its first use.
    #[inline]
    pub fn get(&mut self, enc: Encoding, tick: &Tick, ins: &Instrument) -> &[u8] {
        let i = enc.index();
        let range = match &self.built[i] {
            Some(r) => r.clone(),
            None => {
                let r = encode(&mut self.buf, enc, tick, ins, Marks::default());
                self.built[i] = Some(r.clone());
                r
            }
        };
        &self.buf[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_indices_are_dense_and_distinct() {
        let mut seen = [false; Encoding::COUNT];
        for format in [Format::Json, Format::Rkyv] {
            for mode in Mode::ALL {
                let i = Encoding { format, mode }.index();
                assert!(!seen[i]);
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
