//! Feed → worker hand-off: the rtrb SPSC ring carrying `Tick`s (288 bytes,
//! by value) and `Fanout::publish`, the feed's whole per-tick publish path.
//!
//! Topologies:
//!
//! ```text
//!  ring/push_pop/cap=C (one thread):
//!     bench thread: push(tick) ──► [ rtrb cap C ] ──► pop()          same thread, ring ~empty
//!
//!  ring/spsc/cap=C (two threads; measured from first push to last pop):
//!     producer (bench thread)                         consumer (spawned thread)
//!     push(tick), spin while full ──► [ rtrb cap C ] ──► pop(), spin while empty
//!
//!  ring/publish (one thread):
//!     Fanout::publish(tick) ─┬─► LastValues::store(slot)   (seqlock, 36 words)
//!                            ├─► SeqCst fence, Interest::get(slot) = {worker 0}
//!                            └─► push ──► [ rtrb cap 65536 ] ──► drained untimed every 4096 ticks
//! ```
//!
//! - `ring/push_pop/cap=C`: one push and one pop per iteration. The ring
//!   stays nearly empty but the slot written advances every tick, so the
//!   loop walks the whole ring: 1024 × 288 B = 288 KiB, or 18 MiB at the
//!   configured default capacity of 65536.
//!   `ring/push_pop/u64,cap=1024` is the same with a `u64` payload: the
//!   ring's own bookkeeping without moving 288 bytes in and out.
//! - `ring/spsc/cap=C`: per iteration the producer pushes 100 000 ticks that
//!   a consumer thread pops; criterion reports ticks/s
//!   (`Throughput::Elements`). Thread spawn and join fall inside the timed
//!   region once per sample; a sample is at least 100 000 ticks (several
//!   ms), so their share is small. Needs both cores: on this 2-core shared
//!   machine any other load shows up directly here.
//! - `ring/publish`: one `Fanout::publish` per element (lvc store, fence,
//!   interest check, one push) for a slot one worker is interested in;
//!   `ring/publish+flush` adds `Fanout::flush` per tick (the worst case, a
//!   feed batch of one; the worker is never parked so no wake is sent).
//!   The consumer end is drained outside the timed region so the ring never
//!   fills.
//!
//! Target: none set for the ring itself; these numbers are reference
//! points for the feed → worker hop that the end-to-end latency builds on.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickcast::instrument::{Registry, Slot};
use tickcast::ring::{Hub, PushStats, WorkerSignal};
use tickcast::tick::{Tick, FLAG_QUOTE};

const CAP: usize = 65536;
/// Ticks per iteration of the two-thread bench.
const SPSC_TICKS: u64 = 100_000;
/// Publishes timed between untimed drains.
const PUBLISH_CHUNK: u64 = 4096;

/// A RELIANCE tick (token 2885) in slot `slot`.
fn tick(slot: Slot, seq: u64) -> Tick {
    Tick { token: 2885, slot: slot.0, seq, ltp: 285050, bid: 285045, ask: 285055, flags: FLAG_QUOTE, ..Tick::default() }
}

fn reliance() -> Slot {
    Registry::bundled().slot_of_token(2885).expect("RELIANCE in the bundled master")
}

fn push_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/push_pop");
    let t0 = tick(reliance(), 0);
    for cap in [1024usize, CAP] {
        let (mut tx, mut rx) = rtrb::RingBuffer::<Tick>::new(cap);
        let mut t = t0;
        g.bench_function(BenchmarkId::from_parameter(format!("cap={cap}")), |b| {
            b.iter(|| {
                t.seq += 1;
                tx.push(black_box(t)).expect("ring is empty");
                black_box(rx.pop().expect("just pushed"));
            });
        });
    }
    // Reference: the same ring carrying a u64, i.e. its index and atomic
    // bookkeeping without the 288-byte moves.
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(1024);
    let mut i = 0u64;
    g.bench_function("u64,cap=1024", |b| {
        b.iter(|| {
            i += 1;
            tx.push(black_box(i)).expect("ring is empty");
            black_box(rx.pop().expect("just pushed"));
        });
    });
    g.finish();
}

fn spsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/spsc");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SPSC_TICKS));
    let t0 = tick(reliance(), 0);
    for cap in [1024usize, CAP] {
        g.bench_function(BenchmarkId::from_parameter(format!("cap={cap}")), |b| {
            b.iter_custom(|iters| {
                let total = iters * SPSC_TICKS;
                let (mut tx, mut rx) = rtrb::RingBuffer::<Tick>::new(cap);
                let start = Instant::now();
                let consumer = std::thread::spawn(move || {
                    let mut got = 0u64;
                    let mut sum = 0u64;
                    while got < total {
                        match rx.pop() {
                            Ok(t) => {
                                sum = sum.wrapping_add(t.seq);
                                got += 1;
                            }
                            Err(_) => std::hint::spin_loop(),
                        }
                    }
                    sum
                });
                let mut t = t0;
                for seq in 1..=total {
                    t.seq = seq;
                    while tx.push(t).is_err() {
                        std::hint::spin_loop();
                    }
                }
                let sum = consumer.join().expect("consumer thread");
                let elapsed = start.elapsed();
                assert_eq!(sum, total * (total + 1) / 2, "every tick arrives once");
                elapsed
            });
        });
    }
    g.finish();
}

fn publish(c: &mut Criterion) {
    let poll = mio::Poll::new().expect("mio poll");
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("mio waker");
    let signal = Arc::new(WorkerSignal { sleeping: AtomicBool::new(false), overrun: AtomicBool::new(false), waker });
    let t0 = tick(reliance(), 0);
    let hub = Hub::new(Registry::bundled().len(), vec![signal], CAP);
    hub.interest.set(Slot(t0.slot), 0);
    let (mut fanout, mut consumers) = hub.connect_feed(0, Arc::new(PushStats::default()));
    let mut rx = consumers.pop().expect("one worker");

    let mut g = c.benchmark_group("ring");
    // One running `seq` across both variants: the cache refuses a tick that
    // is not newer than the one it holds, and such a tick is not pushed.
    let mut t = t0;
    for flush in [false, true] {
        let name = if flush { "publish+flush" } else { "publish" };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(PUBLISH_CHUNK);
                    let start = Instant::now();
                    for _ in 0..n {
                        t.seq += 1;
                        fanout.publish(black_box(&t));
                        if flush {
                            fanout.flush();
                        }
                    }
                    total += start.elapsed();
                    let mut drained = 0;
                    while rx.pop().is_ok() {
                        drained += 1;
                    }
                    assert_eq!(drained, n, "ring never fills, every publish pushes");
                    left -= n;
                }
                total
            });
        });
    }
    g.finish();
    drop(poll);
}

criterion_group!(benches, push_pop, spsc, publish);
criterion_main!(benches);
