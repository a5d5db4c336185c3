//! The server's side: create the region, hand each feed its ring writer,
//! beat, reap parked readers that died, close.
//!
//! Creation never exposes a half-built region: each file is built under a
//! temporary name in the same directory and renamed into place (the region
//! first, then its wait file), so a reader that opens the path sees a
//! complete region of one epoch or another. The server holds an exclusive
//! `flock` on its region for as long as it runs: a second server given the
//! same name fails with a clear message, a region whose server died (lock
//! released by the kernel) is replaced, and a file at the path that is not
//! a tickcast region is left alone (start fails, saying so).
//!
//! Readers never write the region, which only the server's user may write:
//! the last-value table in it is the server's own cache. The one thing a
//! reader writes is the wait file (its parked bit), and the writer trusts
//! nothing there but as a hint whether to pay a wake-up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::layout::{self, hdr, ins, stamp_published, stamp_writing, wait, Layout, PARK_SLOTS};
use crate::instrument::Registry;
use crate::lvc::LastValues;
use crate::sys::{self, Mapping, SharedView};
use crate::tick::Tick;
use crate::tick::{TickCell, CELL_SIZE};

/// How to create a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionOptions {
    /// The file (`/dev/shm/tickcast-NAME` for a bare name).
    pub path: PathBuf,
    /// Permission bits (default 0600): the wait file's; the region gets the
    /// same without group and other write (`0660`: the group reads the
    /// region and may park).
    pub mode: u32,
    /// Group to give the file (`--shm-group`), as a gid.
    pub group: Option<u32>,
    /// Records per ring, a power of two.
    pub capacity: usize,
}

/// Counters the writers keep, for `/status` and `/metrics`.
#[derive(Default)]
pub struct WriterStats {
    /// Futex wake-ups paid (at most one per feed batch, only with a parked reader).
    pub wakes: AtomicU64,
}

/// A created region, owned by the server.
pub struct Region {
    map: Arc<Mapping>,
    /// The open region: holds the `flock` that marks it in use.
    file: File,
    path: PathBuf,
    /// The wait file, mapped, and open (to test park slots' lock bytes).
    wait_map: Arc<Mapping>,
    wait_file: File,
    wait_path: PathBuf,
    layout: Layout,
    names: Vec<String>,
    taken: Vec<AtomicBool>,
    stats: Arc<WriterStats>,
    closed: AtomicBool,
}

/// Removes a temporary file unless defused.
struct Unlink(Option<PathBuf>);

impl Drop for Unlink {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Open the current file at `path` and lock it, if there is one: `Ok(None)`
/// when there is none, an error when a running server holds it or it is not
/// a tickcast region.
fn lock_previous(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    loop {
        let f = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let magic = Mapping::map(&f, 0, layout::PAGE, false).ok().map(|m| {
            let bytes: Vec<u8> = m
                .view::<std::sync::atomic::AtomicU8>(hdr::MAGIC, 8)
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            (bytes, m.at::<AtomicU32>(hdr::WRITER_PID).load(Ordering::Relaxed))
        });
        let Some((_, pid)) = magic.filter(|(b, _)| *b == layout::MAGIC) else {
            bail!(
                "{} exists and is not a tickcast shared-memory region: remove it, or give --shm another name",
                path.display()
            );
        };
        if !sys::try_lock_exclusive(&f).with_context(|| format!("locking {}", path.display()))? {
            bail!(
                "shared-memory region {} is in use by a running tickcast (pid {pid}): stop it, or give this one another --shm name",
                path.display()
            );
        }
        // Locked: its server is gone. Unless the path was replaced meanwhile.
        let now = std::fs::metadata(path).map(|m| m.ino()).ok();
        if now == Some(f.metadata()?.ino()) {
            return Ok(Some(f));
        }
    }
}

/// Create `tmp` with exactly `mode` (whatever the umask) and `group`, sized `len`.
fn create_file(tmp: &Path, mode: u32, group: Option<u32>, len: usize) -> Result<File> {
    let _ = std::fs::remove_file(tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", tmp.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&file, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid} (--shm-group)", tmp.display()))?;
    }
    file.set_len(len as u64).with_context(|| format!("sizing {} to {len} bytes", tmp.display()))?;
    Ok(file)
}

/// The wait file of the region at `path`.
pub fn wait_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(layout::WAIT_SUFFIX);
    PathBuf::from(p)
}

/// A gid from a group name (`/etc/group`) or number.
///
/// # Errors
/// An unknown group name (the caller names the setting and quotes it).
pub fn parse_group(s: &str) -> Result<u32> {
    if let Ok(gid) = s.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == s)
        .and_then(|(_, gid)| gid.parse().ok())
        .context("no such group (a name from /etc/group or a number)")
}

impl Region {
    /// Create (or replace a dead server's) region at `opts.path` for the
    /// instruments of `registry` and one ring per name in `rings`.
    ///
    /// # Errors
    /// A running server holds the path; the directory is missing or not
    /// writable; the group cannot be set; sizes out of range.
    pub fn create(opts: &RegionOptions, registry: &Registry, rings: Vec<String>) -> Result<Region> {
        let layout = Layout::new(registry.len(), rings.len(), opts.capacity)?;
        let path = &opts.path;
        let previous = lock_previous(path)?;
        let file_name = path.file_name().and_then(|n| n.to_str()).context("--shm path has no file name")?;
        let tmp = |what: &str| path.with_file_name(format!(".{file_name}.{}.{what}.tmp", std::process::id()));
        let (tmp_data, tmp_wait) = (tmp("region"), tmp("wait"));
        let mut cleanup = (Unlink(Some(tmp_data.clone())), Unlink(Some(tmp_wait.clone())));
        let file = create_file(&tmp_data, opts.mode & !0o022, opts.group, layout.total)?;
        let wait_file = create_file(&tmp_wait, opts.mode, opts.group, layout::PAGE)?;
        if !sys::try_lock_exclusive(&file)? {
            bail!("could not lock the new region {}", tmp_data.display());
        }
        let map = Arc::new(Mapping::map(&file, 0, layout.total, true).context("mapping the region")?);
        let wait_map = Arc::new(Mapping::map(&wait_file, 0, layout::PAGE, true).context("mapping the wait file")?);
        let epoch = fastrand::u64(1..);
        let cut = write_tables(&map, &layout, registry, &rings, epoch);
        write_wait_header(&wait_map, epoch);
        if cut > 0 {
            log::warn!("shm: {cut} symbols longer than {} bytes were cut in the region's table", ins::SYMBOL_LEN);
        }
        // The region first (readers find its wait file after it, by epoch).
        // Over a dead server's region we hold the lock of; else only if
        // nobody created one meanwhile.
        let moved = match previous {
            Some(_) => std::fs::rename(&tmp_data, path),
            None => sys::rename_noreplace(&tmp_data, path),
        };
        match moved {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("another tickcast created the shared-memory region {} just now", path.display())
            }
            other => other.with_context(|| format!("moving the region to {}", path.display()))?,
        }
        cleanup.0 .0 = None;
        let wait_path = wait_path(path);
        std::fs::rename(&tmp_wait, &wait_path)
            .with_context(|| format!("moving the wait file to {}", wait_path.display()))?;
        cleanup.1 .0 = None;
        drop(previous);
        let taken = rings.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Region {
            map,
            file,
            path: path.clone(),
            wait_map,
            wait_file,
            wait_path,
            layout,
            names: rings,
            taken,
            stats: Arc::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// The region's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where everything is.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The last-value table as the server's last-value cache: workers and
    /// readers share it, so a tick is written there once.
    pub fn last_values(&self) -> LastValues {
        LastValues::in_region(SharedView::new(&self.map, self.layout.last_values_off, self.layout.instruments))
    }

    /// The writer of ring `r`, for the feed that publishes into it.
    ///
    /// # Panics
    /// If ring `r` was already taken (one writer per ring) or does not exist.
    pub fn ring_writer(&self, r: usize) -> RingWriter {
        assert!(!self.taken[r].swap(true, Ordering::Relaxed), "ring {r} already has its writer");
        let l = &self.layout;
        RingWriter {
            records: SharedView::new(&self.map, l.records(r), l.capacity),
            cursor: SharedView::new(&self.map, l.ring(r) + layout::ring::WRITE_POS, 1),
            parked: SharedView::new(&self.wait_map, wait::PARKED, PARK_SLOTS / 32),
            wake_seq: SharedView::new(&self.wait_map, wait::WAKE_SEQ, 1),
            mask: l.capacity - 1,
            pos: 0,
            dirty: false,
            stats: self.stats.clone(),
        }
    }

    /// Store `CLOCK_MONOTONIC` in the header (the server's main loop does,
    /// every 20 ms): readers tell a dead writer by a stale heartbeat.
    pub fn heartbeat(&self) {
        self.map.at::<AtomicU64>(hdr::HEARTBEAT_NS).store(sys::monotonic_ns(), Ordering::Release);
    }

    /// Clear the parked bit of every slot whose owner died (its lock byte
    /// is free), so a reader killed while parked does not make the writer
    /// pay a wake-up per batch for ever. Returns how many were cleared.
    ///
    /// The slot's lock is taken while its bit is cleared, so a reader cannot
    /// claim the slot and park in between (and lose its bit).
    pub fn reap_parked(&self) -> usize {
        let words = self.wait_map.view::<AtomicU32>(wait::PARKED, PARK_SLOTS / 32);
        let mut reaped = 0;
        for (w, word) in words.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let lock = wait::LOCKS as u64 + (w * 32) as u64 + u64::from(b);
                if sys::lock_byte(&self.wait_file, lock).unwrap_or(false) {
                    word.fetch_and(!(1 << b), Ordering::SeqCst);
                    let _ = sys::unlock_byte(&self.wait_file, lock);
                    reaped += 1;
                }
            }
        }
        reaped
    }

    /// Readers parked now.
    pub fn parked_readers(&self) -> u32 {
        let words = self.wait_map.view::<AtomicU32>(wait::PARKED, PARK_SLOTS / 32);
        words.iter().map(|w| w.load(Ordering::Relaxed).count_ones()).sum()
    }

    /// Records published into each ring so far, with the ring's feed name.
    pub fn written(&self) -> Vec<(&str, u64)> {
        (0..self.layout.rings)
            .map(|r| {
                let pos = self.map.at::<AtomicU64>(self.layout.ring(r) + layout::ring::WRITE_POS);
                (self.names[r].as_str(), pos.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Wake-ups paid so far.
    pub fn wakes(&self) -> u64 {
        self.stats.wakes.load(Ordering::Relaxed)
    }

    /// Mark the region closed (nothing more will be written), wake every
    /// parked reader so it notices, and remove the file. Called once the
    /// feeds have stopped; idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.map.at::<AtomicU32>(hdr::STATE).store(layout::STATE_CLOSED, Ordering::SeqCst);
        let wake = self.wait_map.at::<AtomicU32>(wait::WAKE_SEQ);
        wake.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(wake);
        // Ours still (we hold the lock, so no server replaced them): remove them.
        let ino = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).ok();
        if ino(&self.path) == self.file.metadata().map(|m| m.ino()).ok() {
            let _ = std::fs::remove_file(&self.path);
        }
        if ino(&self.wait_path) == self.wait_file.metadata().map(|m| m.ino()).ok() {
            let _ = std::fs::remove_file(&self.wait_path);
        }
    }
}

#[cfg(test)]
impl Region {
    /// Drop without closing: the file stays, marked live, and the lock goes
    /// with the file, as when the server is killed.
    pub(crate) fn simulate_crash(self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.close();
    }
}

/// Write a fresh (zeroed) wait file's magic, version and epoch.
fn write_wait_header(map: &Mapping, epoch: u64) {
    map.at::<AtomicU32>(wait::VERSION).store(layout::VERSION, Ordering::Relaxed);
    map.at::<AtomicU64>(wait::EPOCH).store(epoch, Ordering::Relaxed);
    for (cell, &v) in map.view::<std::sync::atomic::AtomicU8>(wait::MAGIC, 8).iter().zip(&layout::WAIT_MAGIC) {
        cell.store(v, Ordering::Relaxed);
    }
}

/// Fill the header, instrument table and ring names of a fresh (zeroed)
/// region; the magic goes last. Returns how many symbols were cut.
fn write_tables(map: &Mapping, l: &Layout, registry: &Registry, rings: &[String], epoch: u64) -> usize {
    let u32_at = |off: usize, v: u32| map.at::<AtomicU32>(off).store(v, Ordering::Relaxed);
    let u64_at = |off: usize, v: u64| map.at::<AtomicU64>(off).store(v, Ordering::Relaxed);
    let bytes_at = |off: usize, b: &[u8]| {
        for (cell, &v) in map.view::<std::sync::atomic::AtomicU8>(off, b.len()).iter().zip(b) {
            cell.store(v, Ordering::Relaxed);
        }
    };
    let now = crate::tick::now_ns();
    u32_at(hdr::VERSION, layout::VERSION);
    u32_at(hdr::HEADER_SIZE, layout::PAGE as u32);
    u64_at(hdr::TOTAL_SIZE, l.total as u64);
    u64_at(hdr::EPOCH, epoch);
    u64_at(hdr::START_NS, now);
    u32_at(hdr::WRITER_PID, std::process::id());
    u32_at(hdr::STATE, layout::STATE_LIVE);
    u64_at(hdr::HEARTBEAT_NS, sys::monotonic_ns());
    u32_at(hdr::INSTRUMENT_COUNT, l.instruments as u32);
    u32_at(hdr::INSTRUMENT_SIZE, layout::INSTRUMENT_SIZE as u32);
    u64_at(hdr::INSTRUMENTS_OFF, l.instruments_off as u64);
    u64_at(hdr::LAST_VALUES_OFF, l.last_values_off as u64);
    u32_at(hdr::CELL_SIZE, CELL_SIZE as u32);
    u32_at(hdr::TICK_SIZE, layout::TICK_SIZE as u32);
    u32_at(hdr::RING_COUNT, l.rings as u32);
    u32_at(hdr::RING_CAPACITY, l.capacity as u32);
    u64_at(hdr::RINGS_OFF, l.rings_off as u64);
    u64_at(hdr::RING_STRIDE, l.ring_stride as u64);
    u32_at(hdr::RING_HEADER_SIZE, layout::RING_HEADER_SIZE as u32);
    u32_at(hdr::PARK_SLOTS, PARK_SLOTS as u32);
    let mut cut = 0;
    for (slot, i) in registry.iter() {
        let e = l.instrument(slot.idx());
        u32_at(e + ins::TOKEN, i.token);
        bytes_at(e + ins::PRICE_DECIMALS, &[i.price_decimals]);
        u32_at(e + ins::LOT_SIZE, i.lot_size);
        u64_at(e + ins::TICK_SIZE, i.tick_size as u64);
        let (exchange, c1) = layout::padded(&i.exchange, ins::EXCHANGE_LEN);
        let (symbol, c2) = layout::padded(&i.symbol, ins::SYMBOL_LEN);
        bytes_at(e + ins::EXCHANGE, &exchange);
        bytes_at(e + ins::SYMBOL, &symbol);
        cut += usize::from(c1 || c2);
    }
    for (r, name) in rings.iter().enumerate() {
        bytes_at(l.ring(r) + layout::ring::NAME, &layout::padded(name, layout::ring::NAME_LEN).0);
    }
    fence(Ordering::Release);
    bytes_at(hdr::MAGIC, &layout::MAGIC);
    cut
}

/// One feed's ring: appends records, and wakes parked readers at most once
/// per batch. Owned by the thread that publishes the feed's ticks.
pub struct RingWriter {
    records: SharedView<TickCell>,
    cursor: SharedView<AtomicU64>,
    parked: SharedView<AtomicU32>,
    wake_seq: SharedView<AtomicU32>,
    mask: usize,
    /// Next position to write (the writer's own copy; never read back).
    pos: u64,
    /// Appended since the last `flush`.
    dirty: bool,
    stats: Arc<WriterStats>,
}

impl RingWriter {
    /// Publish `tick` at the next position: stamp "writing", the tick's
    /// words, stamp "published" (Release), then advance `write_pos`. No
    /// system call, no lock, no read of anything a reader writes.
    #[inline]
    pub fn append(&mut self, tick: &Tick) {
        let p = self.pos;
        let rec = &self.records.as_slice()[p as usize & self.mask];
        rec.word.store(stamp_writing(p), Ordering::Relaxed);
        // Orders the "writing" stamp before the words (Boehm's seqlock).
        fence(Ordering::Release);
        rec.put(tick);
        rec.word.store(stamp_published(p), Ordering::Release);
        self.pos = p + 1;
        self.cursor.as_slice()[0].store(p + 1, Ordering::Release);
        self.dirty = true;
    }

    /// End of a batch: if any reader is parked, wake them (one `futex`
    /// call). Without a parked reader this is a fence and a few loads.
    #[inline]
    pub fn flush(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        // Dekker with a parking reader: our stamps, then its bits; its
        // bit, then our stamps. One of us sees the other.
        fence(Ordering::SeqCst);
        if self.parked.as_slice().iter().any(|w| w.load(Ordering::Relaxed) != 0) {
            let word = &self.wake_seq.as_slice()[0];
            word.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(word);
            self.stats.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.pos
    }
}
