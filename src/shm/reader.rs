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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::layout::{self, hdr, ins, stamp_published, wait, Layout, PAGE, PARK_SLOTS};
use crate::lvc::read_stable;
use crate::sys::{self, Mapping, SharedView};
use crate::tick::{Level, Tick};
use crate::tick::{TickCell, CELL_SIZE};

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

/// What [`Reader::read_with`] returns.
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
/// [`Reader::read_with`] returns them.
pub struct TickView<'a> {
    cell: &'a TickCell,
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

/// While idle, check on the writer (state, heartbeat, a new region at the
/// path) this often.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A heartbeat older than this means the writer is gone.
const SILENT_AFTER_NS: u64 = 2_000_000_000; // of CLOCK_MONOTONIC, as the server beats
/// Longest single park, so writer checks keep their pace.
const MAX_PARK: Duration = Duration::from_millis(100);

/// One ring, as a reader sees it.
struct RingView {
    records: SharedView<TickCell>,
    cursor: SharedView<AtomicU64>,
    name: String,
    mask: usize,
}

/// A parking reader's slot: its lock byte (held through `_file`, the open
/// wait file), its bit, and the wait file mapped writable.
struct Park {
    slot: usize,
    parked: SharedView<AtomicU32>,
    wake_seq: SharedView<AtomicU32>,
    _file: File,
}

/// One region, mapped.
struct Attachment {
    dev_ino: (u64, u64),
    /// Who owns the region file (a re-attach accepts only the same owner).
    owner: u32,
    layout: Layout,
    epoch: u64,
    instruments: Vec<Instrument>,
    by_token: HashMap<u32, u32>,
    last_values: SharedView<TickCell>,
    rings: Vec<RingView>,
    state: SharedView<AtomicU32>,
    heartbeat: SharedView<AtomicU64>,
    park: Option<Park>,
}

fn read_bytes(map: &Mapping, off: usize, len: usize) -> Vec<u8> {
    map.view::<AtomicU8>(off, len).iter().map(|b| b.load(Ordering::Relaxed)).collect()
}

/// A Relaxed load then an Acquire fence: the Acquire that std allows on
/// read-only memory (where an Acquire load itself is not).
#[inline]
fn load_acquire(a: &AtomicU64) -> u64 {
    let v = a.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    v
}

/// Open `path` read-only, not through a symbolic link.
fn open_nofollow(path: &Path, write: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(write).custom_flags(libc::O_NOFOLLOW).open(path)
}

impl Attachment {
    /// Map the region at `path` (and its wait file, to park). `owner`: the
    /// uid the file must belong to (a re-attach: the first region's owner).
    fn open(path: &Path, park: bool, owner: Option<u32>) -> Result<Attachment> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let file = open_nofollow(path, false).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("no shared-memory region at {shown}: is tickcast running with --shm?")
            }
            std::io::ErrorKind::PermissionDenied => {
                anyhow::anyhow!(
                    "no permission to read {shown}: the server can widen it with --shm-mode and --shm-group"
                )
            }
            _ => anyhow::Error::new(e).context(format!("opening {shown}")),
        })?;
        let md = file.metadata()?;
        if owner.is_some_and(|uid| uid != md.uid()) {
            bail!("{shown} now belongs to uid {}, not the server's ({}): not attaching", md.uid(), owner.unwrap_or(0));
        }
        if md.permissions().mode() & 0o022 != 0 {
            bail!(
                "{shown} may be written by others than its owner (mode {:o}): not a region tickcast made",
                md.permissions().mode() & 0o777
            );
        }
        let len = md.len() as usize;
        if len < PAGE {
            bail!("{shown} is truncated: {len} bytes, less than the {PAGE}-byte header");
        }
        let head = Mapping::map(&file, 0, PAGE, false).with_context(|| format!("mapping {shown}"))?;
        if read_bytes(&head, hdr::MAGIC, 8) != layout::MAGIC {
            bail!("{shown} is not a tickcast shared-memory region (bad magic)");
        }
        let u32_at = |off| u64::from(head.at::<AtomicU32>(off).load(Ordering::Relaxed));
        let u64_at = |off| head.at::<AtomicU64>(off).load(Ordering::Relaxed);
        let version = u32_at(hdr::VERSION);
        if version != u64::from(layout::VERSION) {
            bail!(
                "{shown} has layout version {version}; this reader reads version {}: use a reader from the server's tickcast release",
                layout::VERSION
            );
        }
        let l = Layout::new(
            u32_at(hdr::INSTRUMENT_COUNT) as usize,
            u32_at(hdr::RING_COUNT) as usize,
            u32_at(hdr::RING_CAPACITY) as usize,
        )
        .with_context(|| format!("{shown}: corrupt header"))?;
        let expect = [
            ("header_size", u32_at(hdr::HEADER_SIZE), PAGE as u64),
            ("total_size", u64_at(hdr::TOTAL_SIZE), l.total as u64),
            ("instrument_size", u32_at(hdr::INSTRUMENT_SIZE), layout::INSTRUMENT_SIZE as u64),
            ("instruments_off", u64_at(hdr::INSTRUMENTS_OFF), l.instruments_off as u64),
            ("last_values_off", u64_at(hdr::LAST_VALUES_OFF), l.last_values_off as u64),
            ("cell_size", u32_at(hdr::CELL_SIZE), CELL_SIZE as u64),
            ("tick_size", u32_at(hdr::TICK_SIZE), layout::TICK_SIZE as u64),
            ("rings_off", u64_at(hdr::RINGS_OFF), l.rings_off as u64),
            ("ring_stride", u64_at(hdr::RING_STRIDE), l.ring_stride as u64),
            ("ring_header_size", u32_at(hdr::RING_HEADER_SIZE), layout::RING_HEADER_SIZE as u64),
            ("park_slots", u32_at(hdr::PARK_SLOTS), PARK_SLOTS as u64),
        ];
        if let Some((name, got, want)) = expect.iter().find(|(_, g, w)| g != w) {
            bail!("{shown}: corrupt header: {name} is {got}, the layout needs {want}");
        }
        if len < l.total {
            bail!("{shown} is truncated: {len} bytes, its header says {}", l.total);
        }
        let state = u32_at(hdr::STATE) as u32;
        if state != layout::STATE_LIVE && state != layout::STATE_CLOSED {
            bail!("{shown}: corrupt header: state {state}");
        }
        let epoch = u64_at(hdr::EPOCH);
        drop(head);
        let map = Arc::new(Mapping::map(&file, 0, l.total, false).with_context(|| format!("mapping {shown}"))?);
        let mut instruments = Vec::with_capacity(l.instruments);
        let mut by_token = HashMap::with_capacity(l.instruments);
        for slot in 0..l.instruments {
            let e = l.instrument(slot);
            let token = map.at::<AtomicU32>(e + ins::TOKEN).load(Ordering::Relaxed);
            by_token.entry(token).or_insert(slot as u32);
            instruments.push(Instrument {
                token,
                slot: slot as u32,
                exchange: layout::unpadded(&read_bytes(&map, e + ins::EXCHANGE, ins::EXCHANGE_LEN)),
                symbol: layout::unpadded(&read_bytes(&map, e + ins::SYMBOL, ins::SYMBOL_LEN)),
                price_decimals: map.at::<AtomicU8>(e + ins::PRICE_DECIMALS).load(Ordering::Relaxed).min(18),
                lot_size: map.at::<AtomicU32>(e + ins::LOT_SIZE).load(Ordering::Relaxed),
                tick_size: map.at::<AtomicU64>(e + ins::TICK_SIZE).load(Ordering::Relaxed) as i64,
            });
        }
        let rings = (0..l.rings)
            .map(|r| RingView {
                records: SharedView::new(&map, l.records(r), l.capacity),
                cursor: SharedView::new(&map, l.ring(r) + layout::ring::WRITE_POS, 1),
                name: layout::unpadded(&read_bytes(&map, l.ring(r) + layout::ring::NAME, layout::ring::NAME_LEN)),
                mask: l.capacity - 1,
            })
            .collect();
        let park = if park { Some(claim_park_slot(path, epoch)?) } else { None };
        Ok(Attachment {
            dev_ino: (md.dev(), md.ino()),
            owner: md.uid(),
            layout: l,
            epoch,
            instruments,
            by_token,
            last_values: SharedView::new(&map, l.last_values_off, l.instruments),
            rings,
            state: SharedView::new(&map, hdr::STATE, 1),
            heartbeat: SharedView::new(&map, hdr::HEARTBEAT_NS, 1),
            park,
        })
    }
}

/// Open the wait file of the region at `path` (of epoch `epoch`), take the
/// first free park slot (its lock byte) and map the file writable. A new
/// server writes its wait file just after its region: a missing or older
/// one is waited for, up to a second.
fn claim_park_slot(path: &Path, epoch: u64) -> Result<Park> {
    let wait_path = super::writer::wait_path(path);
    let shown = wait_path.display();
    let deadline = Instant::now() + Duration::from_secs(1);
    let (file, page) = loop {
        let ready = match open_nofollow(&wait_path, true) {
            Ok(file) => {
                let page = Mapping::map(&file, 0, PAGE, true);
                match page {
                    Ok(page) => {
                        let ok = read_bytes(&page, wait::MAGIC, 8) == layout::WAIT_MAGIC
                            && page.at::<AtomicU32>(wait::VERSION).load(Ordering::Relaxed) == layout::VERSION
                            && page.at::<AtomicU64>(wait::EPOCH).load(Ordering::Relaxed) == epoch;
                        ok.then_some((file, page))
                    }
                    Err(_) => None, // shorter than a page: not (yet) its wait file
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "no write access to {shown}, which parking needs (a reader marks itself parked there): run as the server's user, let its group park with --shm-mode 0660 --shm-group GROUP, or spin or sleep instead"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("opening {shown}"))),
        };
        if let Some(r) = ready {
            break r;
        }
        if Instant::now() >= deadline {
            bail!("{shown} is missing or belongs to another epoch of the region: cannot park");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let page = Arc::new(page);
    for slot in 0..PARK_SLOTS {
        if sys::lock_byte(&file, (wait::LOCKS + slot) as u64)
            .with_context(|| format!("locking a park slot of {shown}"))?
        {
            return Ok(Park {
                slot,
                parked: SharedView::new(&page, wait::PARKED, PARK_SLOTS / 32),
                wake_seq: SharedView::new(&page, wait::WAKE_SEQ, 1),
                _file: file,
            });
        }
    }
    bail!("{shown}: all {PARK_SLOTS} park slots are in use: spin instead")
}

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
enum Poll {
    Empty,
    Tick(Tick),
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
                    Poll::Tick(t) => {
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
                let ring = &self.att.rings[r];
                let p = self.pos[r];
                let rec = &ring.records.as_slice()[p as usize & ring.mask];
                let s1 = load_acquire(&rec.word);
                let want = stamp_published(p);
                if s1 < want {
                    break;
                }
                if s1 > want {
                    return Read::Event(self.lapped(r));
                }
                let view = TickView { cell: rec };
                let (slot, seq) = (view.slot() as usize, view.seq());
                let fresh = slot < self.last_seq.len() && self.wanted(slot) && seq > self.last_seq[slot];
                let out = if fresh { f.take().map(|f| f(&view)) } else { None };
                fence(Ordering::Acquire);
                if rec.word.load(Ordering::Relaxed) != s1 {
                    return Read::Event(self.lapped(r));
                }
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

    /// The region's `state` word.
    fn state(&self) -> u32 {
        let v = self.att.state.as_slice()[0].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
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

    /// Block until the writer wakes us or `dur` passes.
    fn park(&mut self, dur: Duration) {
        let Some(park) = self.att.park.as_ref().filter(|_| self.state() == layout::STATE_LIVE) else {
            // Closed: nobody will wake us; nap rather than spin until the
            // next server's region appears.
            std::thread::sleep(dur);
            return;
        };
        let (word, bit) = (&park.parked.as_slice()[park.slot / 32], 1u32 << (park.slot % 32));
        let wake = &park.wake_seq.as_slice()[0];
        word.fetch_or(bit, Ordering::SeqCst);
        // Dekker with the writer's flush: our bit, then its records.
        fence(Ordering::SeqCst);
        let v = wake.load(Ordering::SeqCst);
        if !self.ready() && !dur.is_zero() {
            sys::futex_wait(wake, v, dur);
        }
        word.fetch_and(!bit, Ordering::SeqCst);
    }

    /// Is the writer alive, and is there a new region at the path?
    fn check_writer(&mut self) -> Option<Event> {
        self.last_check = Instant::now();
        let at_path = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if at_path.is_some_and(|di| di != self.att.dev_ino) {
            match Attachment::open(&self.path, self.opts.wait.parks(), Some(self.att.owner)) {
                Ok(att) if att.epoch != self.att.epoch => {
                    self.att = att;
                    let _ = self.start(false);
                    return Some(Event::Reattached { epoch: self.att.epoch });
                }
                Ok(_) => {}
                Err(e) if !self.down_reported => {
                    self.down_reported = true;
                    return Some(Event::WriterDown(Down::Unusable(format!("{e:#}"))));
                }
                Err(_) => {}
            }
        }
        match self.writer_down() {
            Some(d) if !self.down_reported => {
                self.down_reported = true;
                Some(Event::WriterDown(d))
            }
            Some(_) => None,
            None => {
                self.down_reported = false;
                None
            }
        }
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

    /// Why the attached region's writer is not writing, if it is not.
    fn writer_down(&self) -> Option<Down> {
        let state = self.state();
        let age_ns = sys::monotonic_ns().saturating_sub(load_acquire(&self.att.heartbeat.as_slice()[0]));
        if state == layout::STATE_CLOSED {
            Some(Down::Closed)
        } else if age_ns > SILENT_AFTER_NS {
            Some(Down::Silent { for_ms: age_ns / 1_000_000 })
        } else {
            None
        }
    }

    /// Read position `pos[r]` of ring `r`: a whole record, nothing yet, or lapped.
    #[inline]
    fn poll_ring(&mut self, r: usize) -> Poll {
        let ring = &self.att.rings[r];
        let p = self.pos[r];
        let rec = &ring.records.as_slice()[p as usize & ring.mask];
        let s1 = load_acquire(&rec.word);
        let want = stamp_published(p);
        if s1 < want {
            return Poll::Empty;
        }
        if s1 > want {
            return Poll::Lapped;
        }
        let t = rec.get();
        fence(Ordering::Acquire);
        if rec.word.load(Ordering::Relaxed) != s1 {
            return Poll::Lapped;
        }
        self.pos[r] = p + 1;
        Poll::Tick(t)
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
