//! The shared-memory path's costs: what `--shm` adds to the feed's publish
//! path, and what a reader pays per tick.
//!
//! Topologies (all one thread; the region is a file in /dev/shm, as `--shm`
//! makes it):
//!
//! ```text
//!  shm/publish/{off,on}:
//!     Fanout::publish(tick) ─┬─► LastValues::store(slot)   (heap, or the region's last-value table)
//!                            ├─► [on] RingWriter::append   (stamp, 36 words, stamp, write_pos)
//!                            └─► push ──► [ rtrb cap 65536 ] ──► drained untimed every 4096 ticks
//!     Fanout::flush every 32 ticks (a feed batch; with [on]: fence + parked-bits check, nobody parked)
//!
//!  shm/append:         RingWriter::append alone
//!  shm/read/copy:      append, then Reader::try_next (a checked copy of the record)
//!  shm/read/in_place:  append, then Reader::read_with (two fields read in place)
//!  shm/read/two_rings: as read/copy, in a region of two feeds (the reader
//!                      polls both rings; the tick is in the second)
//! ```
//!
//! Target (issue 10): `shm/publish/on − shm/publish/off` ≤ 50 ns per tick.
//! The two variants run interleaved per sample (criterion runs one
//! function's samples, then the other's): compare medians from one
//! sitting, as `perf/RESULTS.md` records them.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tickcast::instrument::{Registry, Slot};
use tickcast::ring::{Hub, PushStats, WorkerSignal};
use tickcast::shm::{Options, Read, Reader, Region, RegionOptions, Wait};
use tickcast::tick::{Tick, FLAG_QUOTE};

const CAP: usize = 65536;
const CHUNK: u64 = 4096;
const BATCH: u64 = 32;

/// A region file for this bench, removed on drop.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(tickcast::shm::writer::wait_path(&self.0));
    }
}

fn region(reg: &Registry, tag: &str) -> (Region, TempPath) {
    region_of(reg, tag, 1)
}

fn region_of(reg: &Registry, tag: &str, rings: usize) -> (Region, TempPath) {
    let path = PathBuf::from(format!("/dev/shm/tickcast-bench-{tag}-{}", std::process::id()));
    let opts = RegionOptions { path: path.clone(), mode: 0o600, group: None, capacity: CAP };
    let names = (0..rings).map(|i| format!("feed{i}")).collect();
    (Region::create(&opts, reg, names).expect("create region"), TempPath(path))
}

fn tick(reg: &Registry, seq: u64) -> Tick {
    let slot = reg.slot_of_token(2885).expect("RELIANCE");
    Tick { token: 2885, slot: slot.0, seq, ltp: 285050, bid: 285045, ask: 285055, flags: FLAG_QUOTE, ..Tick::default() }
}

fn publish(c: &mut Criterion) {
    let reg = Registry::bundled();
    let mut g = c.benchmark_group("shm/publish");
    for on in [false, true] {
        let poll = mio::Poll::new().expect("mio poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("mio waker");
        let signal =
            Arc::new(WorkerSignal { sleeping: AtomicBool::new(false), overrun: AtomicBool::new(false), waker });
        let (region, _tmp) = region(&reg, if on { "on" } else { "off" });
        let shm = on.then_some(region);
        let hub = Hub::with_channels(reg.len(), 0, vec![signal], CAP, shm);
        let mut t = tick(&reg, 0);
        hub.interest.set(Slot(t.slot), 0);
        let (mut fanout, mut consumers) = hub.connect_feed(0, Arc::new(PushStats::default()));
        let mut rx = consumers.pop().expect("one worker");
        g.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    let start = Instant::now();
                    for i in 0..n {
                        t.seq += 1;
                        fanout.publish(black_box(&t));
                        if i % BATCH == BATCH - 1 {
                            fanout.flush();
                        }
                    }
                    total += start.elapsed();
                    while rx.pop().is_ok() {}
                    left -= n;
                }
                total
            });
        });
        drop(poll);
    }
    g.finish();
}

fn append_and_read(c: &mut Criterion) {
    let reg = Registry::bundled();
    let (region, _tmp) = region(&reg, "rw");
    let lvc = region.last_values();
    let mut ring = region.ring_writer(0);
    let path = region.path().to_str().expect("utf-8 path").to_string();
    let mut t = tick(&reg, 0);
    let mut g = c.benchmark_group("shm");
    g.bench_function("append", |b| {
        b.iter(|| {
            t.seq += 1;
            ring.append(black_box(&t));
        })
    });
    let mut reader = Reader::open(&path, Options { wait: Wait::Spin, snapshot: false, ..Options::default() })
        .expect("open the region");
    g.bench_function("read/copy", |b| {
        b.iter(|| {
            t.seq += 1;
            lvc.store(Slot(t.slot), &t);
            ring.append(&t);
            black_box(reader.try_next())
        })
    });
    g.bench_function("read/in_place", |b| {
        b.iter(|| {
            t.seq += 1;
            lvc.store(Slot(t.slot), &t);
            ring.append(&t);
            match reader.read_with(|v| (v.ltp(), v.seq())) {
                Read::Tick(x) => black_box(x),
                other => panic!("{other:?}"),
            }
        })
    });
    let (two, _tmp2) = region_of(&reg, "two", 2);
    let (lvc2, mut second) = (two.last_values(), two.ring_writer(1));
    let path2 = two.path().to_str().expect("utf-8 path").to_string();
    let mut reader2 = Reader::open(&path2, Options { wait: Wait::Spin, snapshot: false, ..Options::default() })
        .expect("open the region");
    g.bench_function("read/two_rings", |b| {
        b.iter(|| {
            t.seq += 1;
            lvc2.store(Slot(t.slot), &t);
            second.append(&t);
            black_box(reader2.try_next())
        })
    });
    g.finish();
}

criterion_group!(benches, publish, append_and_read);
criterion_main!(benches);
