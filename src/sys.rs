//! The system calls behind the shared-memory region (`shm`): `mmap`,
//! `futex`, byte-range locks, `renameat2`, the monotonic clock. This is the
//! one module of the crate with `unsafe` code; everything above it works
//! with references to atomics.
//!
//! The rule that makes the rest safe: a mapping is only ever viewed as
//! types made of atomics ([`Shared`]), so another process writing the same
//! bytes at any moment is a race the hardware resolves per word, never
//! undefined behaviour in this process, and no bit pattern it writes is
//! invalid. Bounds and alignment are checked when a view is taken.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};
use std::time::Duration;

use crate::tick::TickCell;

/// Types that may be viewed in shared memory written by other processes:
/// only atomics (no plain data a concurrent write could tear under the
/// compiler's feet) and every bit pattern valid; padding, if any, is never
/// read through the type.
///
/// # Safety
/// Implement only for types made entirely of atomic integers.
pub unsafe trait Shared {}

// SAFETY: an atomic integer; every bit pattern is a valid value.
unsafe impl Shared for AtomicU8 {}
// SAFETY: as above.
unsafe impl Shared for AtomicU32 {}
// SAFETY: as above.
unsafe impl Shared for AtomicU64 {}
// SAFETY: `#[repr(C)]`, one `AtomicU64` then 36 `AtomicU64`s, padded by
// `align(64)` (padding bytes are never read through the type).
unsafe impl Shared for TickCell {}

/// A `MAP_SHARED` mapping of (part of) a file, unmapped on drop.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only accessed through `Shared` views (atomics),
// which are `Sync`; the pointer itself is never written through otherwise.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `file` from `offset` (a multiple of the page
    /// size), read-only or read-write.
    ///
    /// # Errors
    /// `mmap` failed (permissions, a file opened read-only asked to map
    /// writable, no memory).
    pub fn map(file: &File, offset: u64, len: usize, writable: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh mapping at an address the kernel chooses; it
        // aliases no Rust object. The fd is valid for the call.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, file.as_raw_fd(), off) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (an empty mapping cannot be made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `count` values of `T` starting at byte `offset`.
    ///
    /// # Panics
    /// If the range is outside the mapping or misaligned for `T`: callers
    /// take views at offsets they validated (a bug, not bad input).
    pub fn view<T: Shared>(&self, offset: usize, count: usize) -> &[T] {
        let size = std::mem::size_of::<T>().checked_mul(count).expect("view size overflows");
        assert!(offset.checked_add(size).is_some_and(|end| end <= self.len), "view past the mapping");
        // SAFETY: in bounds (checked above) of a live mapping.
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        assert!(p.cast::<T>().is_aligned(), "misaligned view");
        // SAFETY: in bounds, aligned, and valid for the lifetime of `&self`
        // (unmapped only on drop; the file is never shrunk while mapped: the
        // server sizes it once, and only the server's user may write the
        // region). `T: Shared` is all atomics, so shared access alongside
        // other threads and processes is sound and every byte pattern is a
        // valid `T`. On a read-only mapping, callers only load, and only
        // with `Relaxed` ordering (followed by a fence where they need
        // Acquire), as std allows for read-only memory.
        unsafe { std::slice::from_raw_parts(p.cast::<T>(), count) }
    }

    /// One value of `T` at byte `offset` (see [`Mapping::view`]).
    pub fn at<T: Shared>(&self, offset: usize) -> &T {
        &self.view::<T>(offset, 1)[0]
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the pointer and length of a mapping made by `map`; no view
        // outlives `&self`, so nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Block while `word` holds `expected`, at most `timeout` (shared futex:
/// the word may be in a mapping of another process). Returns on a wake, a
/// changed word, the timeout or a signal; the caller re-checks.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned u32 (an `AtomicU32` reference);
    // FUTEX_WAIT only reads it; `ts` outlives the call.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec);
    }
}

/// Wake every process blocked in [`futex_wait`] on `word`; returns how
/// many were woken.
pub fn futex_wake(word: &AtomicU32) -> usize {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access
    // user memory beyond resolving the address.
    let n = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
    usize::try_from(n).unwrap_or(0)
}

fn byte_lock(kind: libc::c_int, offset: u64) -> io::Result<libc::flock> {
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    l.l_len = 1;
    Ok(l)
}

/// Take a write lock on the one byte at `offset` of `file`: an open file
/// description lock (`F_OFD_SETLK`), owned by this open `file` (two readers
/// in one process do not share it, as they would a classic POSIX lock) and
/// released by the kernel when the file is closed, however the process
/// ends. `Ok(false)`: someone else holds it.
///
/// # Errors
/// The file is not open for writing, or `fcntl` failed otherwise.
pub fn lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    let l = byte_lock(libc::F_WRLCK, offset)?;
    // SAFETY: a valid fd and a pointer to a live `flock` (l_pid is 0, as
    // OFD locks require).
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &l as *const libc::flock) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Release this open file's lock on the byte at `offset` (see [`lock_byte`]).
///
/// # Errors
/// `fcntl` failed.
pub fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    let l = byte_lock(libc::F_UNLCK, offset)?;
    // SAFETY: a valid fd and a pointer to a live `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &l as *const libc::flock) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `CLOCK_MONOTONIC` in ns: one clock for every process on the host, which
/// wall-clock steps do not move (the heartbeat's clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a pointer to a live `timespec` the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Rename `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`):
/// two servers creating the same region at once cannot both win.
///
/// # Errors
/// `AlreadyExists` when `to` exists; whatever else `renameat2` reports.
pub fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let r =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Take an exclusive `flock` on the whole file without waiting. `Ok(false)`:
/// another open file description holds it (a running server).
///
/// # Errors
/// `flock` failed for another reason.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: a valid fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// A checked, typed window into a mapping that keeps the mapping alive:
/// what the hot paths hold, so they index a slice instead of re-checking
/// bounds and alignment on every access.
pub struct SharedView<T: Shared> {
    map: std::sync::Arc<Mapping>,
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: `T: Shared` is made of atomics, which are `Send + Sync`; the
// view only hands out `&T`.
unsafe impl<T: Shared> Send for SharedView<T> {}
// SAFETY: as above.
unsafe impl<T: Shared> Sync for SharedView<T> {}

impl<T: Shared> SharedView<T> {
    /// `count` values of `T` at byte `offset` of `map`.
    ///
    /// # Panics
    /// Out of bounds or misaligned (see [`Mapping::view`]).
    pub fn new(map: &std::sync::Arc<Mapping>, offset: usize, count: usize) -> SharedView<T> {
        let s = map.view::<T>(offset, count);
        SharedView { map: map.clone(), ptr: NonNull::from(s).cast(), len: count }
    }

    /// The values.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: checked in bounds and aligned by `Mapping::view` when the
        // view was made; `self.map` keeps the mapping alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapping it looks into.
    pub fn mapping(&self) -> &std::sync::Arc<Mapping> {
        &self.map
    }
}
