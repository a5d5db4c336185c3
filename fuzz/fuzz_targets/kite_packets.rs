//! Kite's binary ticker frames (`kite::packets`, `kite::apply`), as the
//! `kite://` source reads them.
//!
//! Input: byte 0 picks the price scale of the instrument, the rest is one
//! binary frame. Checks: a frame `packets` accepts is exactly its count
//! of length-prefixed packets; `apply` never panics and writes nothing
//! when it refuses; a packet of a consistent shape (an index's or a
//! stock's) decodes → encodes (`write_packet`) → decodes to the same tick.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::instrument::Instrument;
use tickcast::kite::{self, segment};
use tickcast::tick::Tick;

fuzz_target!(|data: &[u8]| {
    let [scale, frame @ ..] = data else { return };
    let Ok(packets) = kite::packets(frame) else { return };
    let packets: Vec<&[u8]> = packets.collect();
    if frame.len() >= 2 {
        let count = usize::from(u16::from_be_bytes([frame[0], frame[1]]));
        assert_eq!(packets.len(), count);
        assert_eq!(2 + packets.iter().map(|p| 2 + p.len()).sum::<usize>(), frame.len());
    } else {
        assert!(packets.is_empty(), "a heartbeat has no packets");
    }
    for p in packets {
        let mut any = Tick { ltp: 7, ..Tick::default() };
        let before = any;
        if kite::apply(p, &mut any, scale % 10).is_err() {
            assert_eq!(any, before, "a refused packet wrote the tick");
        }
        round_trip(p);
    }
});

/// decode → `write_packet` → decode, at the segment's own scale.
fn round_trip(p: &[u8]) {
    let Some(kite_token) = kite::packet_token(p) else { return };
    let seg = (kite_token & 0xff) as u8;
    let index = seg == segment::INDICES;
    let shaped = match p.len() {
        kite::LTP_LEN => true,
        kite::INDEX_QUOTE_LEN | kite::INDEX_FULL_LEN => index,
        kite::QUOTE_LEN | kite::FULL_LEN => !index,
        _ => false,
    };
    if !shaped || kite_token == 0 {
        return;
    }
    let decimals = kite::decimals(seg);
    let ins = Instrument {
        token: 1,
        kite_token,
        exchange: "NSE".into(),
        symbol: "X".into(),
        name: "X".into(),
        isin: "".into(),
        tick_size: 5,
        lot_size: 1,
        price_decimals: decimals,
        ref_price: 0,
    };
    let mut t = Tick::default();
    let u = kite::apply(p, &mut t, decimals).expect("a packet of Kite's lengths");
    t.ts_ns = u.exchange_ts_ns;
    let mut out = Vec::new();
    let r = kite::write_packet(&mut out, u.mode, &t, &ins);
    assert_eq!(out[r.start..r.start + 2], (p.len() as u16).to_be_bytes(), "same packet length");
    let mut t2 = Tick::default();
    let u2 = kite::apply(&out[r.start + 2..r.end], &mut t2, decimals).expect("re-encoded packet decodes");
    t2.ts_ns = u2.exchange_ts_ns;
    assert_eq!(u2, u);
    assert_eq!(t2, t);
}
