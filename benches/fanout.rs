//! Fan-out cost: append one encoded frame to each of N subscribers of a
//! slot. This mirrors the per-subscriber body of `Worker::fan_out` minus
//! the socket, using only the public pieces the worker is built from.
//!
//! Topology: single thread (one worker), no I/O.
//!
//! ```text
//!  tick (seq+1 each iteration)
//!   │
//!   ├─► FrameCache::reset
//!   └─► for sub in SubTable::subscribers_mut(slot)      N = 1 / 100 / 1000
//!         ├─ tick.seq <= sub.last_seq ? skip
//!         ├─ FrameCache::get(sub.enc, &tick, ins)      first call encodes (JSON quote), rest hit
//!         ├─ out[sub.conn].extend_from_slice(frame)    each subscriber's own Vec<u8>
//!         └─ sub.last_seq = tick.seq
//! ```
//!
//! All subscribers use JSON quote (~290-byte frames), so one iteration is one
//! encode plus N copies; at N = 1 the encode dominates. Out-buffers are
//! pre-allocated (1 MiB + slack) and cleared once they pass 1 MiB, so memory
//! stays bounded (~1 GiB at N = 1000) and no iteration allocates; that also
//! means the appends stream through N distinct buffers, which is colder than
//! the server, where a buffer is drained by `writev` every turn.
//!
//! `fanout/drained/N` is the same loop with every out-buffer cleared
//! before its append (as if `writev` had drained it since the last tick, the
//! common case in the server): it separates the copy itself from the cost
//! of writing into cold memory.
//!
//! Left out, relative to `Worker::fan_out`: the connection-slab lookup and
//! the `Conn` fields it reads and writes (likely cold at N = 1000), the
//! max-rate and congestion checks, the out-buffer limit check and the dirty
//! list push. The server's per-subscriber cost is therefore somewhat higher.
//!
//! Criterion reports time per iteration and, via `Throughput::Elements(N)`,
//! subscribers per second; time per subscriber = time / N.
//! Target: ≤ 25 ns per subscriber.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickcast::encode::{Encoding, Format, FrameCache};
use tickcast::instrument::Registry;
use tickcast::subs::{ConnId, Delivery, SubTable};
use tickcast::tick::{Mode, Tick, FLAG_OHLC, FLAG_QUOTE};

const ENC: Encoding = Encoding { format: Format::Json, mode: Mode::Quote };
/// An out-buffer is cleared once it holds more than this.
const OUT_LIMIT: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let reg = Registry::bundled();
    let slot = reg.slot_of_token(2885).expect("RELIANCE in the bundled master");
    let ins = reg.get(slot);
    let mut tick = Tick {
        token: 2885,
        slot: slot.0,
        seq: 0,
        ts_ns: 1_763_712_000_123_456_789,
        ltp: 285050,
        ltq: 10,
        volume: 1_500_000,
        open: 282000,
        high: 286000,
        low: 281500,
        close: 284825,
        bid: 285045,
        ask: 285055,
        bid_qty: 500,
        ask_qty: 750,
        flags: FLAG_QUOTE | FLAG_OHLC,
        ..Tick::default()
    };

    // (group name, clear every iteration?)
    for (group, drain_each_turn) in [("fanout", false), ("fanout/drained", true)] {
        let mut g = c.benchmark_group(group);
        for n in [1u32, 100, 1000] {
            let mut subs = SubTable::new(reg.len());
            for conn in 0..n {
                subs.subscribe(slot, ConnId(conn), ENC, Delivery::Conflate);
            }
            let cap = if drain_each_turn { 4096 } else { OUT_LIMIT + 4096 };
            let mut outs: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(cap)).collect();
            let mut cache = FrameCache::default();
            g.throughput(Throughput::Elements(u64::from(n)));
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    tick.seq += 1;
                    let t = black_box(&tick);
                    cache.reset();
                    for sub in subs.subscribers_mut(slot) {
                        if t.seq <= sub.last_seq {
                            continue;
                        }
                        let frame = cache.get(sub.enc, t, ins);
                        let out = &mut outs[sub.conn.0 as usize];
                        if drain_each_turn || out.len() > OUT_LIMIT {
                            out.clear();
                        }
                        out.extend_from_slice(frame);
                        sub.last_seq = t.seq;
                    }
                });
            });
            black_box(&outs);
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
