//! Encode cost: one tick → one complete WebSocket frame (header + payload),
//! which the worker does once per (tick, encoding) before copying the bytes
//! to every subscriber of that encoding.
//!
//! Topology: single thread, no I/O.
//!
//! ```text
//!  &Tick + &Instrument ──► encode::json::market_data(out, mode, ..)  ─┐
//!                      └─► encode::rkyv::market_data(out, mode, ..)  ─┴─► out: Vec<u8>
//!                                                                         (reused, cleared each iteration)
//! ```
//!
//! Measured per iteration: `out.clear()` plus one `market_data` call, for
//! each format × mode (ltp, quote, depth with 5 levels a side). The tick is
//! a realistic RELIANCE quote (NSE, 2 decimals); `out` keeps its capacity
//! so there is no allocation in the loop. Frame sizes (header + payload):
//! JSON ltp 146 B, quote 292 B, depth 758 B; rkyv 34 / 114 / 276 B.
//!
//! Also the seed dialects' frames (`encode/dialect/*`: Odin, Campus,
//! OpenAlgo quote, an exchange trade, all three exchange streams), and
//! Kite ticker packets per mode (`encode/kite/*`: length prefix + packet,
//! 10 / 46 / 186 B; a connection gathers a turn's packets into one frame).
//!
//! Target: quote JSON ≤ 250 ns.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tickcast::encode::{self, Marks};
use tickcast::instrument::Registry;
use tickcast::tick::{Level, Mode, Tick, DEPTH_LEVELS, FLAG_DEPTH, FLAG_OHLC, FLAG_QUOTE};

/// A full RELIANCE tick: trade, quote, OHLC and five levels of depth.
fn sample(token: u32, slot: u32) -> Tick {
    let mut t = Tick {
        token,
        slot,
        seq: 1_048_576,
        ts_ns: 1_763_712_000_123_456_789,
        ts_recv_ns: 1_763_712_000_123_478_000,
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
        flags: FLAG_QUOTE | FLAG_OHLC | FLAG_DEPTH,
        depth_levels: DEPTH_LEVELS as u8,
        ..Tick::default()
    };
    for i in 0..DEPTH_LEVELS {
        let step = 5 * i as i64;
        let n = i as u32;
        t.depth.bids[i] = Level { price: 285045 - step, qty: 500 + 125 * n, orders: 3 + n };
        t.depth.asks[i] = Level { price: 285055 + step, qty: 750 + 90 * n, orders: 4 + n };
    }
    t
}

fn bench(c: &mut Criterion) {
    let reg = Registry::bundled();
    let slot = reg.slot_of_token(2885).expect("RELIANCE in the bundled master");
    let ins = reg.get(slot);
    let tick = sample(2885, slot.0);
    let mut out: Vec<u8> = Vec::with_capacity(4096);

    let mut g = c.benchmark_group("encode/json");
    for mode in Mode::ALL {
        g.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            b.iter(|| {
                out.clear();
                black_box(encode::json::market_data(&mut out, mode, black_box(&tick), ins, Marks::default()));
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode/rkyv");
    for mode in Mode::ALL {
        g.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            b.iter(|| {
                out.clear();
                black_box(encode::rkyv::market_data(&mut out, mode, black_box(&tick), ins, Marks::default()));
            });
        });
    }
    g.finish();

    // The seed dialects' frames (encode::dialects), through the same entry
    // point the worker uses.
    let mut g = c.benchmark_group("encode/dialect");
    let cases = [
        ("odin", encode::Encoding { format: encode::Format::Odin, mode: Mode::Quote }),
        ("campus", encode::Encoding { format: encode::Format::Campus, mode: Mode::Quote }),
        (
            "openalgo_quote",
            encode::Encoding {
                format: encode::Format::OpenAlgo(tickcast::encode::dialects::openalgo_mode::QUOTE),
                mode: Mode::Quote,
            },
        ),
        ("exchange_trade", encode::Encoding { format: encode::Format::Exchange(1), mode: Mode::Ltp }),
        ("exchange_all", encode::Encoding { format: encode::Format::Exchange(7), mode: Mode::Ltp }),
    ];
    for (name, enc) in cases {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                out.clear();
                black_box(encode::encode(&mut out, enc, black_box(&tick), ins, Marks::default()));
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode/kite");
    for mode in Mode::ALL {
        g.bench_function(BenchmarkId::from_parameter(tickcast::kite::mode_name(mode)), |b| {
            b.iter(|| {
                out.clear();
                black_box(tickcast::kite::write_packet(&mut out, mode, black_box(&tick), ins));
            });
        });
    }
    g.finish();
    black_box(&out);
}

criterion_group!(benches, bench);
criterion_main!(benches);
