//! Binary frames from upstream → ticks, sans-IO.

use std::sync::atomic::Ordering;

use super::KiteHealth;
use crate::instrument::Registry;
use crate::kite::{self as wire, DecodeError};
use crate::tick::Tick;

/// Binary frames → published ticks, sans-IO: each instrument's previous
/// state, onto which each packet is applied.
pub struct Decoder {
    /// Per slot: the newest state (its `seq` the last one published).
    last: Vec<Tick>,
}

impl Decoder {
    /// No state yet, for `registry`'s instruments.
    pub fn new(registry: &Registry) -> Decoder {
        Decoder { last: vec![Tick::default(); registry.len()] }
    }

    /// Decode one binary frame received at `recv_ns` and hand every
    /// updated tick to `publish`; returns how many `publish` took. A frame
    /// whose structure is broken is dropped whole; a packet with an unknown
    /// token or length is dropped alone; each is counted in `health`.
    pub fn frame(
        &mut self,
        frame: &[u8],
        recv_ns: u64,
        registry: &Registry,
        health: &KiteHealth,
        mut publish: impl FnMut(&Tick) -> bool,
    ) -> u64 {
        let count = |e: DecodeError| {
            health.decode_errors[e.index()].fetch_add(1, Ordering::Relaxed);
        };
        let packets = match wire::packets(frame) {
            Ok(p) => p,
            Err(e) => {
                count(e);
                return 0;
            }
        };
        let mut n = 0;
        for p in packets {
            let Some(token) = wire::packet_token(p) else {
                count(DecodeError::UnknownLength);
                continue;
            };
            let Some(slot) = registry.slot_of_kite_token(token) else {
                health.unknown_tokens.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let ins = registry.get(slot);
            let t = &mut self.last[slot.idx()];
            match wire::apply(p, t, ins.price_decimals) {
                Ok(u) => {
                    t.token = ins.token;
                    t.slot = slot.0;
                    t.seq += 1;
                    t.ts_ns = if u.exchange_ts_ns != 0 { u.exchange_ts_ns } else { recv_ns };
                    t.ts_recv_ns = recv_ns;
                    n += u64::from(publish(t));
                }
                Err(e) => count(e),
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::instrument::{Instrument, Slot};
    use crate::tick::Mode;

    fn registry() -> Registry {
        let ins = |token: u32, kite_token: u32| Instrument {
            token,
            kite_token,
            exchange: "NSE".into(),
            symbol: format!("S{token}").into(),
            name: "".into(),
            isin: "".into(),
            tick_size: 5,
            lot_size: 1,
            price_decimals: 2,
            ref_price: 0,
        };
        Registry::new(vec![ins(2885, 738561), ins(1594, 408065)]).unwrap()
    }

    fn frame(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut f = (packets.len() as u16).to_be_bytes().to_vec();
        for p in packets {
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(p);
        }
        f
    }

    fn ltp(token: u32, price: u32) -> Vec<u8> {
        [token.to_be_bytes(), price.to_be_bytes()].concat()
    }

    #[test]
    fn frames_decode_onto_the_previous_state_and_publish() {
        let reg = registry();
        let health = KiteHealth::default();
        let mut d = Decoder::new(&reg);
        let mut got = Vec::new();
        let mut run = |d: &mut Decoder, f: &[u8], recv: u64| {
            d.frame(f, recv, &reg, &health, |t| {
                got.push(*t);
                true
            })
        };
        // A quote packet written by the encoder side, then an LTP packet.
        let rel = reg.get(Slot(0)).clone();
        let quote = Tick {
            ltp: 285050,
            volume: 1000,
            open: 282000,
            high: 286000,
            low: 281000,
            close: 281500,
            ..Tick::default()
        };
        let mut q = Vec::new();
        wire::write_packet(&mut q, Mode::Quote, &quote, &rel);
        let f = [&1u16.to_be_bytes()[..], &q].concat();
        assert_eq!(run(&mut d, &f, 100), 1);
        assert_eq!(run(&mut d, &frame(&[ltp(738561, 285100), ltp(408065, 150000)]), 200), 2);
        // A broken frame (count past the end) publishes nothing.
        let mut broken = frame(&[ltp(738561, 1), ltp(738561, 2)]);
        broken.truncate(broken.len() - 1);
        assert_eq!(run(&mut d, &broken, 300), 0);
        // Unknown token and unknown length: dropped alone.
        assert_eq!(run(&mut d, &frame(&[ltp(999, 1), ltp(738561, 1)[..7].to_vec(), ltp(738561, 285200)]), 400), 1);
        assert_eq!(run(&mut d, &[0], 500), 0, "a heartbeat");
        let rel: Vec<&Tick> = got.iter().filter(|t| t.slot == 0).collect();
        assert_eq!(rel.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3], "strictly increasing per instrument");
        assert_eq!(rel.iter().map(|t| t.ltp).collect::<Vec<_>>(), [285050, 285100, 285200]);
        assert!(rel.iter().all(|t| t.token == 2885), "the registry's token");
        assert_eq!(
            (rel[1].volume, rel[1].open, rel[1].ts_ns, rel[1].ts_recv_ns),
            (1000, 282000, 200, 200),
            "LTP keeps the rest"
        );
        let infy: Vec<&Tick> = got.iter().filter(|t| t.slot == 1).collect();
        assert_eq!((infy.len(), infy[0].token, infy[0].seq, infy[0].ltp), (1, 1594, 1, 150000));
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(l(&health.decode_errors[DecodeError::CountPastEnd.index()]), 1);
        assert_eq!(l(&health.decode_errors[DecodeError::UnknownLength.index()]), 1);
        assert_eq!(l(&health.unknown_tokens), 1);
        // A full packet's exchange time becomes ts_ns.
        let mut full = Vec::new();
        let depth = Tick { ltp: 285300, ts_ns: 1_700_000_000_000_000_000, ..quote };
        wire::write_packet(&mut full, Mode::Depth, &depth, reg.get(Slot(0)));
        let mut last = None;
        d.frame(&[&1u16.to_be_bytes()[..], &full].concat(), 600, &reg, &health, |t| {
            last = Some(*t);
            true
        });
        let t = last.unwrap();
        assert_eq!((t.ltp, t.seq, t.ts_ns, t.ts_recv_ns), (285300, 4, 1_700_000_000_000_000_000, 600));
    }
}
