//! The region's byte layout: a contract with readers in any language,
//! written out in `docs/shm-layout.md`. Every number and offset here is
//! little-endian and fixed for `VERSION`; a change to any of them is a new
//! version.
//!
//! Two files. The region (`/dev/shm/tickcast-NAME`), written by the server
//! alone, read by every reader:
//!
//! ```text
//!  0        header (4096)      magic, version, sizes, offsets, epoch, state, heartbeat
//!  4096     instruments        instrument_count × 128: token, decimals, exchange, symbol
//!  …        last values        instrument_count × 320: a seqlocked tick per slot
//!  …        ring 0 … ring N-1  each: 256-byte ring header (write_pos, feed name),
//!                              then capacity × 320-byte records (stamp + tick)
//! ```
//!
//! and its wait file (`/dev/shm/tickcast-NAME.wait`, one page), the only
//! thing a reader ever writes: the futex word, the parked-reader bits and
//! one lock byte per park slot. Sections start on 4096-byte boundaries.

use anyhow::{bail, Result};

use crate::tick::{Tick, CELL_SIZE};

/// First eight bytes of every region.
pub const MAGIC: [u8; 8] = *b"TICKSHM\0";
/// Layout version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header and of the wait file; section alignment.
pub const PAGE: usize = 4096;
/// Most instruments a region may hold (a reader refuses a header claiming more).
pub const MAX_INSTRUMENTS: usize = 1 << 24;
/// Largest region a reader accepts, bytes (1 TiB).
pub const MAX_TOTAL: usize = 1 << 40;
/// First eight bytes of a wait file.
pub const WAIT_MAGIC: [u8; 8] = *b"TICKWAIT";
/// What a region's wait file is called: its path plus this.
pub const WAIT_SUFFIX: &str = ".wait";
/// Bytes per instrument-table entry.
pub const INSTRUMENT_SIZE: usize = 128;
/// Bytes of a ring's header, before its records.
pub const RING_HEADER_SIZE: usize = 256;
/// Readers that can park at once (one bit and one lock byte each).
pub const PARK_SLOTS: usize = 256;
/// Bytes of the tick inside a cell.
pub const TICK_SIZE: usize = std::mem::size_of::<Tick>();

/// Header field offsets.
pub mod hdr {
    /// `[u8; 8]` = `MAGIC`.
    pub const MAGIC: usize = 0;
    /// `u32` layout version.
    pub const VERSION: usize = 8;
    /// `u32` header size (4096).
    pub const HEADER_SIZE: usize = 12;
    /// `u64` bytes of the whole region.
    pub const TOTAL_SIZE: usize = 16;
    /// `u64` writer epoch: random, non-zero, new at every server start.
    pub const EPOCH: usize = 24;
    /// `u64` server start, ns since the Unix epoch.
    pub const START_NS: usize = 32;
    /// `u32` the writer's process id.
    pub const WRITER_PID: usize = 40;
    /// `u32` (atomic) `STATE_LIVE` or `STATE_CLOSED`.
    pub const STATE: usize = 44;
    /// `u64` (atomic) the writer's clock, ns since the Unix epoch, every 20 ms.
    pub const HEARTBEAT_NS: usize = 48;
    /// `u32` instruments.
    pub const INSTRUMENT_COUNT: usize = 56;
    /// `u32` bytes per instrument entry (128).
    pub const INSTRUMENT_SIZE: usize = 60;
    /// `u64` offset of the instrument table.
    pub const INSTRUMENTS_OFF: usize = 64;
    /// `u64` offset of the last-value table.
    pub const LAST_VALUES_OFF: usize = 72;
    /// `u32` bytes per cell: last-value entry and ring record (320).
    pub const CELL_SIZE: usize = 80;
    /// `u32` bytes of the tick inside a cell (288).
    pub const TICK_SIZE: usize = 84;
    /// `u32` rings (one per feed).
    pub const RING_COUNT: usize = 88;
    /// `u32` records per ring, a power of two.
    pub const RING_CAPACITY: usize = 92;
    /// `u64` offset of ring 0.
    pub const RINGS_OFF: usize = 96;
    /// `u64` bytes from one ring to the next.
    pub const RING_STRIDE: usize = 104;
    /// `u32` bytes of a ring header (256).
    pub const RING_HEADER_SIZE: usize = 112;
    /// `u32` park slots in the wait file (256).
    pub const PARK_SLOTS: usize = 116;
}

/// Offsets inside the wait file (one page).
pub mod wait {
    /// `[u8; 8]` = `WAIT_MAGIC`.
    pub const MAGIC: usize = 0;
    /// `u32` layout version (= the region's).
    pub const VERSION: usize = 8;
    /// `u64` the epoch of the region it belongs to.
    pub const EPOCH: usize = 16;
    /// `u32` futex word: the writer adds one before each wake-up.
    pub const WAKE_SEQ: usize = 64;
    /// `[u32; PARK_SLOTS / 32]` bit `i % 32` of word `i / 32`: slot `i` is parked.
    pub const PARKED: usize = 128;
    /// Slot `i` is owned by whoever holds an open-file-description write
    /// lock on byte `LOCKS + i`.
    pub const LOCKS: usize = 256;
}

/// Offsets inside an instrument entry.
pub mod ins {
    /// `u32` exchange token.
    pub const TOKEN: usize = 0;
    /// `u8` price decimals: price = raw / 10^decimals.
    pub const PRICE_DECIMALS: usize = 4;
    /// `u32` lot size.
    pub const LOT_SIZE: usize = 8;
    /// `i64` tick size in minor units.
    pub const TICK_SIZE: usize = 16;
    /// `[u8; 16]` exchange, UTF-8, NUL-padded.
    pub const EXCHANGE: usize = 24;
    /// Bytes of the exchange field.
    pub const EXCHANGE_LEN: usize = 16;
    /// `[u8; 64]` symbol, UTF-8, NUL-padded.
    pub const SYMBOL: usize = 40;
    /// Bytes of the symbol field.
    pub const SYMBOL_LEN: usize = 64;
}

/// Offsets inside a ring header.
pub mod ring {
    /// `u64` (atomic) records `0..write_pos` have been published.
    pub const WRITE_POS: usize = 0;
    /// `[u8; 32]` the feed's display name, UTF-8, NUL-padded.
    pub const NAME: usize = 128;
    /// Bytes of the name field.
    pub const NAME_LEN: usize = 32;
}

/// `hdr::STATE`: the writer is running.
pub const STATE_LIVE: u32 = 1;
/// `hdr::STATE`: the writer stopped cleanly; nothing more will be written.
pub const STATE_CLOSED: u32 = 2;

/// A ring record's stamp once position `pos` is published in it.
#[inline]
pub const fn stamp_published(pos: u64) -> u64 {
    2 * pos + 2
}

/// A ring record's stamp while position `pos` is being written into it.
#[inline]
pub const fn stamp_writing(pos: u64) -> u64 {
    2 * pos + 1
}

fn page_align(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Where everything is, for a given instrument count, ring count and
/// ring capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Instruments (= slots).
    pub instruments: usize,
    /// Rings (one per feed).
    pub rings: usize,
    /// Records per ring, a power of two.
    pub capacity: usize,
    /// Offset of the instrument table.
    pub instruments_off: usize,
    /// Offset of the last-value table.
    pub last_values_off: usize,
    /// Offset of ring 0.
    pub rings_off: usize,
    /// Bytes from one ring to the next.
    pub ring_stride: usize,
    /// Bytes in all.
    pub total: usize,
}

impl Layout {
    /// The layout for these sizes.
    ///
    /// # Errors
    /// A capacity that is not a power of two (at least 2), no instruments
    /// or rings, or a region too large to address.
    pub fn new(instruments: usize, rings: usize, capacity: usize) -> Result<Layout> {
        if !capacity.is_power_of_two() || !(2..=1 << 30).contains(&capacity) {
            bail!("ring capacity {capacity}: must be a power of two from 2 to 2^30");
        }
        if instruments == 0 || instruments > MAX_INSTRUMENTS || rings == 0 || rings > 1024 {
            bail!(
                "a region needs 1..={MAX_INSTRUMENTS} instruments and 1..=1024 rings (got {instruments} and {rings})"
            );
        }
        let instruments_off = PAGE;
        let last_values_off = instruments_off + page_align(instruments * INSTRUMENT_SIZE);
        let rings_off = last_values_off + page_align(instruments * CELL_SIZE);
        let ring_stride = page_align(RING_HEADER_SIZE + capacity * CELL_SIZE);
        let total = ring_stride.checked_mul(rings).and_then(|r| r.checked_add(rings_off));
        let Some(total) = total.filter(|&t| t <= MAX_TOTAL) else {
            bail!("a region of {rings} rings × {capacity} records is too large");
        };
        Ok(Layout { instruments, rings, capacity, instruments_off, last_values_off, rings_off, ring_stride, total })
    }

    /// Offset of instrument entry `slot`.
    pub fn instrument(&self, slot: usize) -> usize {
        self.instruments_off + slot * INSTRUMENT_SIZE
    }

    /// Offset of ring `r`'s header.
    pub fn ring(&self, r: usize) -> usize {
        self.rings_off + r * self.ring_stride
    }

    /// Offset of ring `r`'s first record.
    pub fn records(&self, r: usize) -> usize {
        self.ring(r) + RING_HEADER_SIZE
    }
}

/// Copy `s` into a NUL-padded field of `len` bytes, cut at a character
/// boundary if it is longer. Returns the bytes and whether it was cut.
pub fn padded(s: &str, len: usize) -> (Vec<u8>, bool) {
    let mut end = s.len().min(len);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.as_bytes()[..end].to_vec();
    out.resize(len, 0);
    (out, end < s.len())
}

/// The string in a NUL-padded field (invalid UTF-8 replaced).
pub fn unpadded(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_page_aligned_and_cells_cache_aligned() {
        let l = Layout::new(54, 2, 1024).unwrap();
        assert_eq!(l.instruments_off, 4096);
        assert_eq!(l.last_values_off, 4096 + 8192, "54 × 128 = 6912 bytes → two pages");
        assert_eq!(l.rings_off, l.last_values_off + 20480, "54 × 320 = 17280 → five pages");
        assert_eq!(l.ring_stride, page_align(256 + 1024 * 320));
        assert_eq!(l.total, l.rings_off + 2 * l.ring_stride);
        assert_eq!(l.records(1) % 64, 0);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Layout::new(10, 1, 1000).is_err(), "not a power of two");
        assert!(Layout::new(0, 1, 1024).is_err());
        assert!(Layout::new(10, 0, 1024).is_err());
        assert!(Layout::new(10, 1024, 1 << 30).is_err(), "too large");
        assert!(Layout::new(MAX_INSTRUMENTS + 1, 1, 2).is_err(), "too many instruments");
    }

    #[test]
    fn stamps_order_writing_before_published() {
        assert!(stamp_writing(7) < stamp_published(7));
        assert!(stamp_published(6) < stamp_writing(7));
        assert_eq!(stamp_published(0), 2, "zero means never written");
    }

    #[test]
    fn padded_fields_cut_at_a_character_boundary() {
        assert_eq!(padded("NSE", 5), (b"NSE\0\0".to_vec(), false));
        assert_eq!(padded("ABCDEF", 4), (b"ABCD".to_vec(), true));
        let (b, cut) = padded("é€", 4);
        assert_eq!((b, cut), (vec![0xc3, 0xa9, 0, 0], true), "€ is three bytes: dropped whole");
        assert_eq!(unpadded(b"TCS\0\0\0"), "TCS");
    }
}
