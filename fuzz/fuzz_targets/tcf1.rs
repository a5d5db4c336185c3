//! The TCF1 decoder (`feed::tcf1`): datagrams and streams.
//!
//! Checks: a packet `parse` accepts has `packet_len` equal to its length
//! and exactly `count` records; decode → encode → decode gives the same
//! records; the merger applies any record without a panic and only to an
//! instrument of the master; a stream of back-to-back packets is cut where
//! the packets end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tickcast::feed::tcf1::{self, Merger, Record};
use tickcast::instrument::Registry;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::bundled)
}

fuzz_target!(|data: &[u8]| {
    // A stream: packets back to back, as over TCP or in a file.
    let mut rest = data;
    while let Some(Ok(n)) = tcf1::packet_len(rest) {
        assert!(n >= tcf1::HEADER_LEN && n <= rest.len());
        assert!(tcf1::parse(&rest[..n]).is_ok(), "a packet cut from a stream is whole");
        rest = &rest[n..];
    }

    let Ok(p) = tcf1::parse(data) else { return };
    assert_eq!(tcf1::packet_len(data), Some(Ok(data.len())));
    let records: Vec<Record> = p.records().collect();
    assert_eq!(records.len(), usize::from(p.count));

    let mut again = Vec::new();
    tcf1::write_header(&mut again, p.count, p.packet_seq);
    for r in &records {
        match r {
            Record::Tick(t) => tcf1::write_tick(&mut again, t),
            Record::Depth(t) => tcf1::write_depth(&mut again, t),
        }
    }
    assert_eq!(again.len(), data.len());
    let q = tcf1::parse(&again).expect("a re-encoded packet parses");
    assert_eq!((q.count, q.packet_seq), (p.count, p.packet_seq));
    for (a, b) in records.iter().zip(q.records()) {
        match (a, b) {
            // Levels past five are clamped when written (and refused when merged).
            (Record::Depth(x), Record::Depth(y)) if x.depth_levels > 5 => {
                assert_eq!((y.depth_levels, y.depth, y.token), (5, x.depth, x.token));
            }
            (a, b) => assert_eq!(*a, b),
        }
    }

    let mut merger = Merger::new(registry());
    for r in &records {
        if let Ok(t) = merger.apply(registry(), r, 1) {
            let (Record::Tick(x) | Record::Depth(x)) = r;
            assert_eq!(t.token, x.token);
            assert!(registry().slot_of_token(t.token).is_some());
        }
    }
});
