//! Co-located readers over shared memory: every tick, from the thread that
//! publishes it to any number of processes on the host, with no system
//! call and no lock on the way.
//!
//! ```text
//!  feed thread ──► Fanout::publish ──► worker rings ──► WebSocket clients
//!                      │ last-value cache = the region's last-value table
//!                      └─► RingWriter::append ──► [ring of this feed]
//!                                                      ▲        ▲
//!                                        reader process┘        └reader process
//! ```
//!
//! `--shm NAME` creates `/dev/shm/tickcast-NAME` (or the path given): a
//! header, the instrument table, the last-value table (which *is* the
//! server's last-value cache, so a tick is written there once) and one
//! ring of fixed-size records per feed; and beside it `….wait`, the one
//! small file readers write (to park). Each ring has one writer, the
//! thread that publishes that feed's ticks (a feed thread, or the worker
//! that polls it), so there is no merging hop and no contention between
//! feeds; a reader polls every ring. Records are published the Disruptor /
//! Aeron way: stamp written last with Release, checked before and after
//! the copy with Acquire, so a reader never takes a torn record and learns
//! exactly when the writer lapped it.
//!
//! - [`layout`]: the byte layout (the contract, `docs/shm-layout.md`).
//! - [`writer`]: the server's side: create, append, wake, close.
//! - [`reader`]: the reader library: snapshot then live, gaps, waiting,
//!   re-attaching to a restarted server.
//! - [`crate::sys`] below it: `mmap`, `futex`, locks; the only `unsafe`
//!   code in the crate.

pub mod layout;
pub mod reader;
#[cfg(test)]
mod tests;
pub mod writer;

use std::path::PathBuf;

use anyhow::{bail, Result};

pub use reader::{Down, Event, Gap, Instrument, Options, Read, Reader, TickView, Wait};
pub use writer::{Region, RegionOptions, RingWriter};

/// Default records per ring: 65,536 × 320 bytes = 20 MiB per feed, 650 ms
/// of slack for a reader at 100k ticks/s.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// The file of region `name`: a bare name (`demo`) is
/// `/dev/shm/tickcast-demo`; anything with a `/` is a path as given. Its
/// wait file is the same path plus `.wait`.
///
/// # Errors
/// An empty name, or one with characters other than letters, digits, `.`,
/// `_` and `-`; a name or path ending in `.wait`.
pub fn region_path(name: &str) -> Result<PathBuf> {
    if name.ends_with(layout::WAIT_SUFFIX) {
        bail!("shm name `{name}`: names ending in `{}` are the regions' wait files", layout::WAIT_SUFFIX);
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || name.starts_with('.')
    {
        bail!("shm name `{name}`: use letters, digits, `.`, `_` and `-` (or a file path with a `/`)");
    }
    Ok(PathBuf::from(format!("/dev/shm/tickcast-{name}")))
}
