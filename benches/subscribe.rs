//! Subscribe cost on a worker's control path: resolve what the client named
//! to a slot, then add a *fresh* (slot, conn) pair to the worker's
//! [`SubTable`].
//!
//! Topology: single thread, no I/O; only the registry and one table.
//!
//! ```text
//!  request ──► Registry::slot_of_token(token)    ─┐
//!          └─► Registry::slot_of_symbol("NSE:X") ─┴─► Slot ──► SubTable::subscribe(slot, conn)
//!                                                               └─ by_slot[slot]: SmallVec<[Sub; 2]>
//! ```
//!
//! What one measured element is:
//! - `subscribe/token/bg=B`: one `slot_of_token` + one `subscribe` of a new
//!   connection. The loop subscribes that connection to every slot of the
//!   bundled registry (all 54 tokens, one timer read per 54), then
//!   unsubscribes it *outside* the timed region, so every timed subscribe
//!   adds a pair that was not there before. `B` connections are already
//!   subscribed to every slot; the duplicate check is a bit test in the
//!   connection's membership bitset, so the cost must not grow with `B`.
//! - `subscribe/symbol/KEY/bg=B`: one `slot_of_symbol(KEY)` + one
//!   `subscribe`. A symbol names one slot, so the fresh pairs come from 54
//!   independent tables (as if 54 workers), each with `B` connections
//!   already on that slot; one timer read per 54, unsubscribe untimed.
//!
//! Criterion's time is per element (per token or per symbol request).
//! Targets: token subscribe ≤ 100 ns, symbol subscribe ≤ 1 µs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tickcast::encode::{Encoding, Format};
use tickcast::instrument::{Registry, Slot};
use tickcast::subs::{ConnId, Delivery, SubTable};
use tickcast::tick::Mode;

const ENC: Encoding = Encoding { format: Format::Json, mode: Mode::Quote };
/// The connection being subscribed; never one of the background ones.
const NEW: ConnId = ConnId(1_000_000);
/// Background subscribers per slot.
const BACKGROUND: [u32; 3] = [0, 100, 1000];

/// A table for `reg` with connections `0..bg` subscribed to each of `slots`.
fn table(reg: &Registry, slots: &[Slot], bg: u32) -> SubTable {
    let mut t = SubTable::new(reg.len());
    for &slot in slots {
        for c in 0..bg {
            t.subscribe(slot, ConnId(c), ENC, Delivery::Conflate);
        }
    }
    t
}

fn token(c: &mut Criterion) {
    let reg = Registry::bundled();
    let tokens: Vec<u32> = reg.iter().map(|(_, ins)| ins.token).collect();
    let slots: Vec<Slot> = reg.iter().map(|(s, _)| s).collect();
    let mut g = c.benchmark_group("subscribe/token");
    for bg in BACKGROUND {
        let mut t = table(&reg, &slots, bg);
        g.bench_function(BenchmarkId::from_parameter(format!("bg={bg}")), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(tokens.len());
                    let start = Instant::now();
                    for &tok in &tokens[..n] {
                        let slot = reg.slot_of_token(black_box(tok)).expect("bundled token");
                        black_box(t.subscribe(slot, NEW, ENC, Delivery::Conflate));
                    }
                    total += start.elapsed();
                    for &slot in &slots[..n] {
                        t.unsubscribe(slot, NEW).expect("was subscribed");
                    }
                    left -= n;
                }
                total
            });
        });
    }
    g.finish();
}

fn symbol(c: &mut Criterion) {
    const TABLES: usize = 54;
    let reg = Registry::bundled();
    let mut g = c.benchmark_group("subscribe/symbol");
    for key in ["NSE:RELIANCE", "TCS"] {
        let slot = reg.slot_of_symbol(key).expect("bundled symbol");
        for bg in [0, 100] {
            let mut tables: Vec<SubTable> = (0..TABLES).map(|_| table(&reg, &[slot], bg)).collect();
            g.bench_function(BenchmarkId::new(key, format!("bg={bg}")), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let n = left.min(TABLES);
                        let start = Instant::now();
                        for t in &mut tables[..n] {
                            let slot = reg.slot_of_symbol(black_box(key)).expect("bundled symbol");
                            black_box(t.subscribe(slot, NEW, ENC, Delivery::Conflate));
                        }
                        total += start.elapsed();
                        for t in &mut tables[..n] {
                            t.unsubscribe(slot, NEW).expect("was subscribed");
                        }
                        left -= n;
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, token, symbol);
criterion_main!(benches);
