//! Attaching to a region: mapping it read-only after checking who owns it
//! and that it is a region at all, claiming a park slot in its wait file,
//! and watching the writer (closed, silent, replaced by a new region at
//! the same path).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::view::{Down, Event, Instrument};
use super::{Reader, SILENT_AFTER_NS};
use crate::shm::layout::{self, hdr, ins, wait, Layout, PAGE, PARK_SLOTS};
use crate::sys::{self, Mapping, SharedView};
use crate::tick::{TickCell, CELL_SIZE};

/// One ring, as a reader sees it.
pub(super) struct RingView {
    pub(super) records: SharedView<TickCell>,
    pub(super) cursor: SharedView<AtomicU64>,
    pub(super) name: String,
    pub(super) mask: usize,
}

/// A parking reader's slot: its lock byte (held through `_file`, the open
/// wait file), its bit, and the wait file mapped writable.
pub(super) struct Park {
    pub(super) slot: usize,
    pub(super) parked: SharedView<AtomicU32>,
    pub(super) wake_seq: SharedView<AtomicU32>,
    pub(super) _file: File,
}

/// One region, mapped.
pub(super) struct Attachment {
    pub(super) dev_ino: (u64, u64),
    /// Who owns the region file (a re-attach accepts only the same owner).
    pub(super) owner: u32,
    pub(super) layout: Layout,
    pub(super) epoch: u64,
    pub(super) instruments: Vec<Instrument>,
    pub(super) by_token: HashMap<u32, u32>,
    pub(super) last_values: SharedView<TickCell>,
    pub(super) rings: Vec<RingView>,
    pub(super) state: SharedView<AtomicU32>,
    pub(super) heartbeat: SharedView<AtomicU64>,
    pub(super) park: Option<Park>,
}

fn read_bytes(map: &Mapping, off: usize, len: usize) -> Vec<u8> {
    map.view::<AtomicU8>(off, len).iter().map(|b| b.load(Ordering::Relaxed)).collect()
}

/// A Relaxed load then an Acquire fence: the Acquire that std allows on
/// read-only memory (where an Acquire load itself is not).
#[inline]
pub(super) fn load_acquire(a: &AtomicU64) -> u64 {
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
    pub(super) fn open(path: &Path, park: bool, owner: Option<u32>) -> Result<Attachment> {
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
    let wait_path = crate::shm::writer::wait_path(path);
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

impl Reader {
    /// The region's `state` word.
    pub(super) fn state(&self) -> u32 {
        let v = self.att.state.as_slice()[0].load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
    }

    /// Block until the writer wakes us or `dur` passes.
    pub(super) fn park(&mut self, dur: Duration) {
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
    pub(super) fn check_writer(&mut self) -> Option<Event> {
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

    /// Why the attached region's writer is not writing, if it is not.
    pub(super) fn writer_down(&self) -> Option<Down> {
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
}
