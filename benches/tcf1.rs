//! TCF1 decode: what a UDP/TCP/replay source does to every packet before it
//! publishes anything, without the socket and without the rings.
//!
//! Topology: single thread, no I/O.
//!
//! ```text
//!  tcf1/decode:
//!     &[u8] (one packet, 10 000 B) ──► tcf1::parse ──► Packet::records() ──► Record (black_box)
//!
//!  tcf1/decode+merge:
//!     &[u8] ──► tcf1::parse ──► Packet::records() ──► Merger::apply(registry, rec) ──► &Tick (black_box)
//! ```
//!
//! The packet is built once with the encoder (`tcf1::write_packet`)
//! from 32 simulator ticks (`feed::sim::Sim` over `Registry::bundled()`: random
//! instruments of the bundled master, trade + quote + OHLC + five levels of
//! depth), so it holds 32 tick records (128 B) and 32 depth records (184 B):
//! 64 records, 16 + 32 × 312 = 10 000 bytes. One iteration = one whole
//! packet: `parse` (header and every record kind validated before anything
//! is decoded) then every record decoded into a `Tick`; `decode+merge` adds
//! one `Merger::apply` per record (token → slot lookup, merge into that
//! instrument's state). Criterion reports records/s
//! (`Throughput::Elements(64)`).
//!
//! Left out (measured by `benches/udp_feed.rs` end to end): the `recv`
//! syscall, `Fanout::publish` and the `PacketSeq` / health counters of
//! `feed::publish_packet`.
//!
//! Target: decode ≥ 5 M records/s on one core.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickcast::feed::sim::Sim;
use tickcast::feed::tcf1::{self, Merger};
use tickcast::instrument::Registry;

/// Full ticks per packet.
const TICKS: usize = 32;

/// One TCF1 packet of `TICKS` full simulator ticks, and its record count.
fn packet(reg: &Registry) -> (Vec<u8>, u64) {
    let mut sim = Sim::new(reg, 1, 0, 1, 7);
    let ticks: Vec<_> = (0..TICKS).map(|i| *sim.next_tick(1_763_712_000_000_000_000 + i as u64 * 1_000)).collect();
    let mut out = Vec::new();
    tcf1::write_packet(&mut out, 1, &ticks);
    (out, ticks.iter().map(|t| u64::from(tcf1::records_for(t))).sum())
}

fn decode(c: &mut Criterion) {
    let reg = Registry::bundled();
    let (bytes, records) = packet(&reg);
    assert_eq!(records, 2 * TICKS as u64, "every tick has a depth record");
    assert_eq!(bytes.len(), tcf1::HEADER_LEN + TICKS * (tcf1::TICK_LEN + tcf1::DEPTH_LEN));
    assert_eq!(tcf1::parse(&bytes).expect("valid packet").records().count() as u64, records);

    let mut g = c.benchmark_group("tcf1");
    g.throughput(Throughput::Elements(records));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let p = tcf1::parse(black_box(&bytes)).expect("valid packet");
            for rec in p.records() {
                black_box(rec);
            }
        });
    });
    let mut merger = Merger::new(&reg);
    g.bench_function("decode+merge", |b| {
        b.iter(|| {
            let p = tcf1::parse(black_box(&bytes)).expect("valid packet");
            for rec in p.records() {
                black_box(merger.apply(&reg, &rec, 1).expect("known token, ≤ 5 levels"));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
