//! The reader library: attach to a region read-only, get the current value
//! of every instrument, then every tick as it is published; learn exactly
//! what was lost when the writer laps you; re-attach by yourself when the
//! server restarts.
//!
//! ```no_run
//! use tickcast::shm::{Event, Options, Reader, Wait};
//!
//! let mut r = Reader::open("demo", Options { wait: Wait::Spin, ..Options::default() })?;
//! for ev in &mut r {
//!     match ev {
//!         Event::Snapshot { tick, .. } | Event::Tick(tick) => println!("{} {}", tick.token, tick.ltp),
//!         Event::Gap(g) => eprintln!("lost {} records", g.lost()),
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Three ways to take a tick: [`Reader::try_next`] (never waits),
//! [`Reader::wait`] and the blocking iterator (wait as [`Wait`] says), each
//! handing out a consistent copy of the tick (288 bytes on the stack, no
//! allocation); and [`Reader::read_with`], zero-copy: a closure reads the
//! record in place through a [`TickView`] and its result is returned only
//! if the record was not overwritten meanwhile (an optimistic read, as
//! Java's `StampedLock` does it).
//!
//! Stitching: at attach the reader notes each ring's `write_pos`, then
//! reads the last-value table, then the rings from the noted positions,
//! dropping any tick whose `seq` is not newer than what it already gave for
//! that instrument. The writer stores the last value before the ring
//! record, so nothing falls between the two, and nothing is given twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::layout::stamp_published;
use crate::lvc::read_stable;
use crate::tick::{Tick, TickCell};

mod attach;
mod view;

use attach::{load_acquire, Attachment};
pub use view::{Down, Event, Gap, Instrument, Read, TickView};

/// How a reader waits when nothing is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Busy-poll: the lowest latency, a whole core.
    Spin,
    /// Busy-poll this long after the last tick, then park.
    SpinThenPark(Duration),
    /// Block in the kernel (futex) until the writer wakes it: no CPU while
    /// idle, a wake-up (~tens of µs) per batch. Needs write access to the
    /// region's wait file (the server's user, or `--shm-mode 0660`).
    Park,
    /// Poll, then sleep this long when nothing is ready: for readers
    /// without write access that should not spin.
    Sleep(Duration),
}

impl Wait {
    /// Parse `spin`, `park`, `hybrid` (spin 100 µs, then park) or `sleep`
    /// (poll every millisecond).
    pub fn parse(s: &str) -> Option<Wait> {
        match s {
            "spin" => Some(Wait::Spin),
            "park" => Some(Wait::Park),
            "hybrid" => Some(Wait::SpinThenPark(Duration::from_micros(100))),
            "sleep" => Some(Wait::Sleep(Duration::from_millis(1))),
            _ => None,
        }
    }

    fn parks(self) -> bool {
        matches!(self, Wait::Park | Wait::SpinThenPark(_))
    }
}

/// How to read.
#[derive(Clone, Debug)]
pub struct Options {
    /// How to wait.
    pub wait: Wait,
    /// Only these tokens (empty: every instrument).
    pub tokens: Vec<u32>,
    /// Only these symbols, `SYMBOL` or `EXCHANGE:SYMBOL` (with `tokens`: both).
    pub symbols: Vec<String>,
    /// Start with the current value of every instrument (default true).
    pub snapshot: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            wait: Wait::SpinThenPark(Duration::from_micros(100)),
            tokens: Vec::new(),
            symbols: Vec::new(),
            snapshot: true,
        }
    }
}

/// While idle, check on the writer (state, heartbeat, a new region at the
/// path) this often.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A heartbeat older than this means the writer is gone.
const SILENT_AFTER_NS: u64 = 2_000_000_000; // of CLOCK_MONOTONIC, as the server beats
/// Longest single park, so writer checks keep their pace.
const MAX_PARK: Duration = Duration::from_millis(100);

/// Where a reader is in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Giving last values, from this slot on.
    Snapshot(usize),
    /// Reading the rings.
    Live,
}

/// One ring poll.
#[allow(clippy::large_enum_variant)] // a tick by value, on the stack: no allocation per tick
enum Poll<T> {
    /// Nothing published at the position yet.
    Empty,
    /// The record was whole: what was read from it.
    Whole(T),
    /// Overwritten before or while it was read.
    Lapped,
}

/// A reader of one region (and of the regions that replace it at the same
/// path when the server restarts).
pub struct Reader {
    path: PathBuf,
    opts: Options,
    att: Attachment,
    /// Per slot: wanted (empty: all).
    want: Vec<bool>,
    /// Per slot: newest `seq` given.
    last_seq: Vec<u64>,
    /// Per slot: the `seq` of the last current value given (ring ticks up
    /// to it are the snapshot's overlap, skipped without a count).
    snap_seq: Vec<u64>,
    /// Live ticks dropped as older than one already given (see [`Reader::stale`]).
    stale: u64,
    /// Per ring: next position to read.
    pos: Vec<u64>,
    phase: Phase,
    next_ring: usize,
    lost: u64,
    /// A writer event found while waiting, given by the next read.
    pending: Option<Event>,
    down_reported: bool,
    last_check: Instant,
}

impl Reader {
    /// Attach to region `name` (`demo` → `/dev/shm/tickcast-demo`, or a
    /// path with a `/`).
    ///
    /// # Errors
    /// No region, no permission, another layout version, a truncated or
    /// corrupt region, an unknown token or symbol in `opts`.
    pub fn open(name: &str, opts: Options) -> Result<Reader> {
        let path = super::region_path(name)?;
        let att = Attachment::open(&path, opts.wait.parks(), None)?;
        let mut r = Reader {
            path,
            opts,
            want: Vec::new(),
            last_seq: Vec::new(),
            snap_seq: Vec::new(),
            stale: 0,
            pos: Vec::new(),
            phase: Phase::Live,
            next_ring: 0,
            lost: 0,
            pending: None,
            down_reported: false,
            last_check: Instant::now(),
            att,
        };
        r.start(true)?;
        Ok(r)
    }

    /// Resolve the filter against the attached region and position at the
    /// head of every ring (then the last values, if asked).
    fn start(&mut self, strict: bool) -> Result<()> {
        let n = self.att.layout.instruments;
        self.want.clear();
        if !self.opts.tokens.is_empty() || !self.opts.symbols.is_empty() {
            self.want = vec![false; n];
            for &t in &self.opts.tokens {
                match self.att.by_token.get(&t) {
                    Some(&s) => self.want[s as usize] = true,
                    None if strict => bail!("token {t} is not in the region's instrument table"),
                    None => {}
                }
            }
            for s in &self.opts.symbols {
                match self.slot_of_symbol(s) {
                    Some(slot) => self.want[slot as usize] = true,
                    None if strict => bail!("symbol `{s}` is not in the region's instrument table"),
                    None => {}
                }
            }
        }
        self.last_seq = vec![0; n];
        self.snap_seq = vec![0; n];
        // Positions before the last values: see the module docs.
        self.pos = self.att.rings.iter().map(|r| load_acquire(&r.cursor.as_slice()[0])).collect();
        self.phase = if self.opts.snapshot { Phase::Snapshot(0) } else { Phase::Live };
        self.down_reported = false;
        Ok(())
    }

    /// The region's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The attached region's epoch (new at every server start).
    pub fn epoch(&self) -> u64 {
        self.att.epoch
    }

    /// Records per ring.
    pub fn capacity(&self) -> usize {
        self.att.layout.capacity
    }

    /// The feeds, one ring each, by name.
    pub fn feeds(&self) -> Vec<&str> {
        self.att.rings.iter().map(|r| r.name.as_str()).collect()
    }

    /// Every instrument, in slot order.
    pub fn instruments(&self) -> &[Instrument] {
        &self.att.instruments
    }

    /// The instrument in `slot` (`Tick::slot`).
    pub fn instrument(&self, slot: u32) -> Option<&Instrument> {
        self.att.instruments.get(slot as usize)
    }

    /// The slot of `token`.
    pub fn slot_of_token(&self, token: u32) -> Option<u32> {
        self.att.by_token.get(&token).copied()
    }

    /// The slot of `SYMBOL` (any exchange, first found) or `EXCHANGE:SYMBOL`, any case.
    pub fn slot_of_symbol(&self, key: &str) -> Option<u32> {
        let (exchange, symbol) = key.split_once(':').map_or((None, key), |(e, s)| (Some(e), s));
        self.att
            .instruments
            .iter()
            .find(|i| {
                i.symbol.eq_ignore_ascii_case(symbol) && exchange.is_none_or(|e| i.exchange.eq_ignore_ascii_case(e))
            })
            .map(|i| i.slot)
    }

    /// Records published into the attached region so far, all rings together.
    pub fn published(&self) -> u64 {
        self.att.rings.iter().map(|r| load_acquire(&r.cursor.as_slice()[0])).sum()
    }

    /// The park slot this reader holds (readers that park hold one of 256).
    pub fn park_slot(&self) -> Option<usize> {
        self.att.park.as_ref().map(|p| p.slot)
    }

    /// Records lost to laps so far (the sum of every [`Gap`]).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    #[inline]
    fn wanted(&self, slot: usize) -> bool {
        self.want.is_empty() || self.want.get(slot).copied().unwrap_or(false)
    }

    /// Live ticks dropped as stale. Besides laps ([`Reader::lost`]), the
    /// one way a published tick is not given: it was older than one already
    /// given for its instrument (two feeds carrying the same instrument,
    /// read from their rings in another order than they were published).
    /// The newer state was given; the older tick is dropped, as a WebSocket
    /// client's stream drops it, and counted here.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// Take a tick of `slot` with `seq` if it is for a wanted instrument
    /// and newer than what was given; count it if it is older than that
    /// but newer than the last current value (not the snapshot's overlap).
    #[inline]
    fn accept(&mut self, slot: usize, seq: u64) -> bool {
        if slot >= self.last_seq.len() || !self.wanted(slot) {
            return false;
        }
        if seq <= self.last_seq[slot] {
            self.stale += u64::from(seq > self.snap_seq[slot]);
            return false;
        }
        self.last_seq[slot] = seq;
        true
    }

    /// The next event if one is ready; never waits.
    pub fn try_next(&mut self) -> Option<Event> {
        if let Some(ev) = self.pending.take() {
            return Some(ev);
        }
        if let Phase::Snapshot(from) = self.phase {
            if let Some(ev) = self.next_snapshot(from) {
                return Some(ev);
            }
            self.phase = Phase::Live;
        }
        let rings = self.att.rings.len();
        for i in 0..rings {
            let r = (self.next_ring + i) % rings;
            loop {
                match self.poll_ring(r) {
                    Poll::Empty => break,
                    Poll::Lapped => return Some(self.lapped(r)),
                    Poll::Whole(t) => {
                        if self.accept(t.slot as usize, t.seq) {
                            self.next_ring = (r + 1) % rings;
                            return Some(Event::Tick(t));
                        }
                    }
                }
            }
        }
        None
    }

    /// Zero-copy: run `f` on the next wanted live tick in place, and return
    /// its result if the record stayed whole meanwhile (else the gap).
    /// Snapshots and other events come as [`Read::Event`]. Never waits.
    /// `f` should only read: it may run on a record that turns out torn,
    /// whose result is then thrown away.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&TickView<'_>) -> R) -> Read<R> {
        if let Some(ev) = self.pending.take() {
            return Read::Event(ev);
        }
        if let Phase::Snapshot(from) = self.phase {
            if let Some(ev) = self.next_snapshot(from) {
                return Read::Event(ev);
            }
            self.phase = Phase::Live;
        }
        let mut f = Some(f);
        let rings = self.att.rings.len();
        for i in 0..rings {
            let r = (self.next_ring + i) % rings;
            loop {
                let p = self.pos[r];
                let polled = read_at(&self.att.rings[r], p, |rec| {
                    let view = TickView { cell: rec };
                    let (slot, seq) = (view.slot() as usize, view.seq());
                    let fresh = slot < self.last_seq.len() && self.wanted(slot) && seq > self.last_seq[slot];
                    (slot, seq, fresh, if fresh { f.take().map(|f| f(&view)) } else { None })
                });
                let (slot, seq, fresh, out) = match polled {
                    Poll::Empty => break,
                    Poll::Lapped => return Read::Event(self.lapped(r)),
                    Poll::Whole(read) => read,
                };
                self.pos[r] = p + 1;
                // Whole: the same decision as a copy's (and its count).
                let accepted = self.accept(slot, seq);
                debug_assert_eq!(accepted, fresh);
                if let Some(out) = out {
                    self.next_ring = (r + 1) % rings;
                    return Read::Tick(out);
                }
            }
        }
        Read::Empty
    }

    /// The next event, waiting as [`Options::wait`] says, at most `timeout`
    /// (`None`: until there is one). While idle it checks on the writer
    /// every 100 ms and re-attaches when a new server's region appears.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.try_next() {
                return Some(ev);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.wait_ready(left) {
                return None;
            }
        }
    }

    /// Wait as [`Options::wait`] says until something is ready to take
    /// (a record, a gap, a writer event), at most `timeout`; false when the
    /// time ran out. Takes nothing: for loops that read with
    /// [`Reader::read_with`].
    pub fn wait_ready(&mut self, timeout: Option<Duration>) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.ready() {
                return true;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if now.duration_since(self.last_check) >= CHECK_EVERY {
                self.pending = self.check_writer();
                if self.pending.is_some() {
                    return true;
                }
            }
            let idle = now.duration_since(start);
            let left = match timeout {
                Some(t) if idle >= t => return false,
                Some(t) => t - idle,
                None => MAX_PARK,
            };
            let nap = left.min(CHECK_EVERY.saturating_sub(now.duration_since(self.last_check)));
            match self.opts.wait {
                Wait::Spin => {}
                Wait::SpinThenPark(d) if idle < d => {}
                Wait::Park | Wait::SpinThenPark(_) => self.park(nap),
                Wait::Sleep(d) => std::thread::sleep(d.min(nap)),
            }
        }
    }

    /// Is anything ready (an event, a record, a lap)?
    fn ready(&self) -> bool {
        self.pending.is_some()
            || self.phase != Phase::Live
            || self.att.rings.iter().zip(&self.pos).any(|(ring, &p)| {
                let rec = &ring.records.as_slice()[p as usize & ring.mask];
                load_acquire(&rec.word) >= stamp_published(p)
            })
    }

    /// The next last value from slot `from` on that is wanted and newer
    /// than what this reader gave.
    fn next_snapshot(&mut self, from: usize) -> Option<Event> {
        for slot in from..self.att.layout.instruments {
            if !self.wanted(slot) {
                continue;
            }
            let Some(t) = self.last_value(slot) else {
                continue; // its writer died mid-write: nothing newer will come
            };
            if t.seq == 0 || t.slot as usize != slot || t.seq <= self.last_seq[slot] {
                continue;
            }
            let prev_seq = std::mem::replace(&mut self.last_seq[slot], t.seq);
            self.snap_seq[slot] = t.seq;
            self.phase = Phase::Snapshot(slot + 1);
            return Some(Event::Snapshot { tick: t, prev_seq });
        }
        None
    }

    /// A consistent read of `slot`'s last value. A cell mid-write stays so
    /// while its writer is descheduled (keep trying, yielding now and then)
    /// or if it died there (give up once the writer is known gone).
    fn last_value(&self, slot: usize) -> Option<Tick> {
        let cell = &self.att.last_values.as_slice()[slot];
        let mut tries = 0u32;
        loop {
            if let Some(t) = read_stable(cell) {
                return Some(t);
            }
            tries = tries.wrapping_add(1);
            if tries % 1024 == 0 {
                if self.writer_down().is_some() {
                    return None;
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }

    /// Copy the record at read position `pos[r]` of ring `r` (advancing
    /// past it when whole).
    #[inline]
    fn poll_ring(&mut self, r: usize) -> Poll<Tick> {
        let polled = read_at(&self.att.rings[r], self.pos[r], TickCell::get);
        if matches!(polled, Poll::Whole(_)) {
            self.pos[r] += 1;
        }
        polled
    }

    /// Ring `r` lapped us: skip to its head, then resynchronise every
    /// instrument from the last-value table.
    fn lapped(&mut self, r: usize) -> Event {
        let from = self.pos[r];
        let head = load_acquire(&self.att.rings[r].cursor.as_slice()[0]).max(from + 1);
        self.pos[r] = head;
        self.lost += head - from;
        self.phase = Phase::Snapshot(0);
        Event::Gap(Gap { ring: r, feed: self.att.rings[r].name.clone(), from_pos: from, to_pos: head })
    }
}

impl Iterator for Reader {
    type Item = Event;

    /// The next event, waiting as long as it takes (never `None`).
    fn next(&mut self) -> Option<Event> {
        self.wait(None)
    }
}

/// An optimistic read of the record at position `p` of `ring`: `read` runs
/// on it in place, and its result counts only if the record's stamp is the
/// one `p` publishes both before and after (else it was overwritten: a lap).
#[inline(always)]
fn read_at<T>(ring: &attach::RingView, p: u64, read: impl FnOnce(&TickCell) -> T) -> Poll<T> {
    let rec = &ring.records.as_slice()[p as usize & ring.mask];
    let s1 = load_acquire(&rec.word);
    let want = stamp_published(p);
    if s1 < want {
        return Poll::Empty;
    }
    if s1 > want {
        return Poll::Lapped;
    }
    let out = read(rec);
    fence(Ordering::Acquire);
    if rec.word.load(Ordering::Relaxed) != s1 {
        return Poll::Lapped;
    }
    Poll::Whole(out)
}
