//! TCF1, the binary tick feed format (`docs/tcf1.md`): decode, encode, and
//! merge records into complete ticks. Sans-IO: bytes in, ticks out.
//!
//! A packet is validated whole before any record is applied: a short
//! packet, a bad magic, an unknown record kind, a count past the end or
//! trailing bytes drop the packet and name the reason. Never a panic,
//! never a partial apply.
//!
//! ```text
//! packet: "TCF1" count:u16 reserved:u16 packet_seq:u64 | records…
//! tick  (kind 1, 128 B): flags token seq ts_ns ltp ltq volume bid ask bid_qty ask_qty open high low close oi prev_oi
//! depth (kind 2, 184 B): levels token seq ts_ns bids[5]{price qty orders} asks[5]{…}
//! ```

use crate::instrument::{Registry, Slot};
use crate::tick::{Level, Tick, DEPTH_LEVELS, FLAG_DEPTH, FLAG_OHLC, FLAG_OI, FLAG_QUOTE};

/// Packet magic.
pub const MAGIC: [u8; 4] = *b"TCF1";
/// Packet header length.
pub const HEADER_LEN: usize = 16;
/// Tick record length (kind 1).
pub const TICK_LEN: usize = 128;
/// Depth record length (kind 2).
pub const DEPTH_LEN: usize = 184;
/// Record kind: tick.
pub const KIND_TICK: u8 = 1;
/// Record kind: depth.
pub const KIND_DEPTH: u8 = 2;

/// Why a packet (or record) was dropped. Index into `DropReason::NAMES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than its header, or its records run past the end.
    Short = 0,
    /// Magic is not `TCF1`.
    BadMagic = 1,
    /// A record kind other than 1 or 2.
    UnknownKind = 2,
    /// Bytes after the last record (a datagram holds exactly one packet).
    Trailing = 3,
    /// A record for a token not in the instrument master (record dropped).
    UnknownToken = 4,
    /// A depth record claiming more than five levels (record dropped).
    BadLevels = 5,
}

impl DropReason {
    /// Names for `/status`, indexed by the discriminant.
    pub const NAMES: [&'static str; 6] =
        ["short", "bad_magic", "unknown_kind", "trailing_bytes", "unknown_token", "bad_levels"];

    /// The `/status` name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

#[inline]
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
#[inline]
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
#[inline]
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
#[inline]
fn i64_at(b: &[u8], o: usize) -> i64 {
    u64_at(b, o) as i64
}

/// A validated packet: header fields and its record bytes.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// Per-source packet sequence.
    pub packet_seq: u64,
    /// Number of records.
    pub count: u16,
    records: &'a [u8],
}

/// Length of the packet at the start of `buf` when it is complete:
/// `None` = need more bytes. For streams (TCP, files), where packets are
/// back to back.
///
/// # Errors
/// Bad magic or an unknown record kind: the stream cannot be resynchronised.
pub fn packet_len(buf: &[u8]) -> Option<Result<usize, DropReason>> {
    if buf.len() >= 4 && buf[..4] != MAGIC {
        return Some(Err(DropReason::BadMagic));
    }
    if buf.len() < HEADER_LEN {
        return None;
    }
    let count = u16_at(buf, 4);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        let kind = *buf.get(at)?;
        at += match kind {
            KIND_TICK => TICK_LEN,
            KIND_DEPTH => DEPTH_LEN,
            _ => return Some(Err(DropReason::UnknownKind)),
        };
    }
    (buf.len() >= at).then_some(Ok(at))
}

/// Validate one packet that must fill `buf` exactly (a UDP datagram).
///
/// # Errors
/// See [`DropReason`]: the whole packet is dropped.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, DropReason> {
    if buf.len() < HEADER_LEN {
        return Err(if buf.len() >= 4 && buf[..4] != MAGIC { DropReason::BadMagic } else { DropReason::Short });
    }
    match packet_len(buf) {
        None => Err(DropReason::Short),
        Some(Err(e)) => Err(e),
        Some(Ok(n)) if n != buf.len() => Err(DropReason::Trailing),
        Some(Ok(_)) => Ok(Packet { packet_seq: u64_at(buf, 8), count: u16_at(buf, 4), records: &buf[HEADER_LEN..] }),
    }
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Kind 1: trade, quote, OHLC, OI (`flags` say which are valid).
    Tick(Tick),
    /// Kind 2: depth levels (in `Tick::depth`, `depth_levels` valid).
    Depth(Tick),
}

impl<'a> Packet<'a> {
    /// The records, in order. `Tick::slot` is not set (see [`Merger`]).
    pub fn records(&self) -> impl Iterator<Item = Record> + 'a {
        let mut rest = self.records;
        std::iter::from_fn(move || {
            let kind = *rest.first()?;
            let (len, rec) =
                if kind == KIND_TICK { (TICK_LEN, decode_tick(rest)) } else { (DEPTH_LEN, decode_depth(rest)) };
            rest = &rest[len..];
            Some(rec)
        })
    }
}

fn decode_tick(b: &[u8]) -> Record {
    Record::Tick(Tick {
        flags: b[1] & (FLAG_QUOTE | FLAG_OHLC | FLAG_OI),
        token: u32_at(b, 4),
        seq: u64_at(b, 8),
        ts_ns: u64_at(b, 16),
        ltp: i64_at(b, 24),
        ltq: u32_at(b, 32),
        volume: u64_at(b, 40),
        bid: i64_at(b, 48),
        ask: i64_at(b, 56),
        bid_qty: u32_at(b, 64),
        ask_qty: u32_at(b, 68),
        open: i64_at(b, 72),
        high: i64_at(b, 80),
        low: i64_at(b, 88),
        close: i64_at(b, 96),
        oi: u64_at(b, 104),
        prev_oi: u64_at(b, 112),
        ..Tick::default()
    })
}

fn decode_depth(b: &[u8]) -> Record {
    let mut t =
        Tick { depth_levels: b[1], token: u32_at(b, 4), seq: u64_at(b, 8), ts_ns: u64_at(b, 16), ..Tick::default() };
    for i in 0..DEPTH_LEVELS {
        let level = |o: usize| Level { price: i64_at(b, o), qty: u32_at(b, o + 8), orders: u32_at(b, o + 12) };
        t.depth.bids[i] = level(24 + i * 16);
        t.depth.asks[i] = level(104 + i * 16);
    }
    Record::Depth(t)
}

/// Append a packet header for `count` records.
pub fn write_header(out: &mut Vec<u8>, count: u16, packet_seq: u64) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&packet_seq.to_le_bytes());
}

/// Append a tick record (kind 1) for `t`.
pub fn write_tick(out: &mut Vec<u8>, t: &Tick) {
    out.push(KIND_TICK);
    out.push(t.flags & (FLAG_QUOTE | FLAG_OHLC | FLAG_OI));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&t.token.to_le_bytes());
    for v in [t.seq, t.ts_ns, t.ltp as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&t.ltq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for v in [t.volume, t.bid as u64, t.ask as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&t.bid_qty.to_le_bytes());
    out.extend_from_slice(&t.ask_qty.to_le_bytes());
    for v in [t.open as u64, t.high as u64, t.low as u64, t.close as u64, t.oi, t.prev_oi, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Append a depth record (kind 2) for `t`'s book.
pub fn write_depth(out: &mut Vec<u8>, t: &Tick) {
    out.push(KIND_DEPTH);
    out.push(t.depth_levels.min(DEPTH_LEVELS as u8));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&t.token.to_le_bytes());
    out.extend_from_slice(&t.seq.to_le_bytes());
    out.extend_from_slice(&t.ts_ns.to_le_bytes());
    for l in t.depth.bids.iter().chain(&t.depth.asks) {
        out.extend_from_slice(&l.price.to_le_bytes());
        out.extend_from_slice(&l.qty.to_le_bytes());
        out.extend_from_slice(&l.orders.to_le_bytes());
    }
}

/// Number of records [`write_full`] writes for `t`.
pub fn records_for(t: &Tick) -> u16 {
    1 + u16::from(t.flags & FLAG_DEPTH != 0)
}

/// Append `t` as a tick record and, if it has depth, a depth record.
pub fn write_full(out: &mut Vec<u8>, t: &Tick) {
    write_tick(out, t);
    if t.flags & FLAG_DEPTH != 0 {
        write_depth(out, t);
    }
}

/// Append a whole packet: the header, then every tick in full.
pub fn write_packet(out: &mut Vec<u8>, packet_seq: u64, ticks: &[Tick]) {
    write_header(out, ticks.iter().map(records_for).sum(), packet_seq);
    for t in ticks {
        write_full(out, t);
    }
}

/// Merges records into complete per-instrument state, so every published
/// tick carries the newest trade, quote and book together. One per source.
pub struct Merger {
    state: Vec<Tick>,
}

impl Merger {
    /// Empty state for every slot of `registry`.
    pub fn new(registry: &Registry) -> Merger {
        Merger { state: vec![Tick::default(); registry.len()] }
    }

    /// The merged state of `slot`.
    ///
    /// # Panics
    /// If `slot` is not from the registry this merger was built for.
    pub fn current(&self, slot: u32) -> &Tick {
        &self.state[slot as usize]
    }

    /// Apply one record; returns the merged tick to publish, or why the
    /// record was dropped.
    ///
    /// # Errors
    /// [`DropReason::UnknownToken`], [`DropReason::BadLevels`].
    pub fn apply(&mut self, registry: &Registry, rec: &Record, recv_ns: u64) -> Result<&Tick, DropReason> {
        let (Record::Tick(r) | Record::Depth(r)) = rec;
        let slot: Slot = registry.slot_of_token(r.token).ok_or(DropReason::UnknownToken)?;
        let s = &mut self.state[slot.idx()];
        match rec {
            Record::Tick(r) => {
                s.ltp = r.ltp;
                s.ltq = r.ltq;
                s.volume = r.volume;
                if r.flags & FLAG_QUOTE != 0 {
                    (s.bid, s.ask, s.bid_qty, s.ask_qty) = (r.bid, r.ask, r.bid_qty, r.ask_qty);
                }
                if r.flags & FLAG_OHLC != 0 {
                    (s.open, s.high, s.low, s.close) = (r.open, r.high, r.low, r.close);
                }
                if r.flags & FLAG_OI != 0 {
                    (s.oi, s.prev_oi) = (r.oi, r.prev_oi);
                }
                s.flags |= r.flags;
            }
            Record::Depth(r) => {
                if usize::from(r.depth_levels) > DEPTH_LEVELS {
                    return Err(DropReason::BadLevels);
                }
                s.depth = r.depth;
                s.depth_levels = r.depth_levels;
                s.flags |= FLAG_DEPTH;
            }
        }
        s.token = r.token;
        s.slot = slot.0;
        s.seq = r.seq;
        s.ts_ns = r.ts_ns;
        s.ts_recv_ns = recv_ns;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tick {
        let mut t = Tick {
            token: 2885,
            seq: 42,
            ts_ns: 1_763_712_000_123_456_789,
            ltp: 285050,
            ltq: 10,
            volume: 1_500_000,
            bid: 285045,
            ask: 285055,
            bid_qty: 500,
            ask_qty: 750,
            open: 282000,
            high: 286000,
            low: 281500,
            close: 284825,
            oi: 7,
            prev_oi: 6,
            flags: FLAG_QUOTE | FLAG_OHLC | FLAG_OI | FLAG_DEPTH,
            depth_levels: 5,
            ..Tick::default()
        };
        for i in 0..5 {
            t.depth.bids[i] = Level { price: 285045 - 5 * i as i64, qty: 100 + i as u32, orders: 1 + i as u32 };
            t.depth.asks[i] = Level { price: 285055 + 5 * i as i64, qty: 200 + i as u32, orders: 2 + i as u32 };
        }
        t
    }

    fn packet(seq: u64, ticks: &[Tick]) -> Vec<u8> {
        let mut out = Vec::new();
        write_packet(&mut out, seq, ticks);
        out
    }

    #[test]
    fn round_trip_through_encoder_decoder_and_merger() {
        let reg = Registry::bundled();
        let t = sample();
        let bytes = packet(9, &[t]);
        assert_eq!(bytes.len(), HEADER_LEN + TICK_LEN + DEPTH_LEN);
        let p = parse(&bytes).unwrap();
        assert_eq!((p.packet_seq, p.count), (9, 2));
        let mut m = Merger::new(&reg);
        let mut last = None;
        for r in p.records() {
            last = Some(*m.apply(&reg, &r, 5).unwrap());
        }
        let got = last.unwrap();
        let want = Tick { slot: reg.slot_of_token(2885).unwrap().0, ts_recv_ns: 5, ..t };
        assert_eq!(got, want);
    }

    #[test]
    fn documented_offsets() {
        let bytes = packet(1, &[sample()]);
        let rec = &bytes[HEADER_LEN..];
        assert_eq!(&bytes[..4], b"TCF1");
        assert_eq!(u32_at(rec, 4), 2885, "token at 4");
        assert_eq!(u64_at(rec, 8), 42, "seq at 8");
        assert_eq!(i64_at(rec, 24), 285050, "ltp at 24");
        assert_eq!(u64_at(rec, 104), 7, "oi at 104");
        let depth = &rec[TICK_LEN..];
        assert_eq!((depth[0], depth[1]), (2, 5));
        assert_eq!(i64_at(depth, 104), 285055, "asks[0].price at 104");
        assert_eq!(u32_at(depth, 104 + 4 * 16 + 12), 6, "asks[4].orders");
    }

    #[test]
    fn malformed_packets_are_dropped_whole_with_a_reason() {
        let good = packet(1, &[sample(), sample()]);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_kind = good.clone();
        bad_kind[HEADER_LEN + TICK_LEN] = 9;
        let mut count_past_end = good.clone();
        count_past_end[4] = 5;
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
            ("empty", vec![], DropReason::Short),
            ("short header", good[..10].to_vec(), DropReason::Short),
            ("cut record", good[..HEADER_LEN + 50].to_vec(), DropReason::Short),
            ("bad magic", bad_magic, DropReason::BadMagic),
            ("unknown kind", bad_kind, DropReason::UnknownKind),
            ("count past the end", count_past_end, DropReason::Short),
            ("trailing bytes", trailing, DropReason::Trailing),
        ];
        for (label, bytes, want) in cases {
            assert_eq!(parse(&bytes).unwrap_err(), want, "{label}");
        }
        let mut heartbeat = Vec::new();
        write_header(&mut heartbeat, 0, 77);
        assert_eq!(parse(&heartbeat).unwrap().count, 0, "count 0 is a heartbeat");
    }

    #[test]
    fn stream_framing_finds_packet_boundaries() {
        let a = packet(1, &[sample()]);
        let b = packet(2, &[Tick { flags: 0, ..sample() }]);
        let stream = [a.clone(), b.clone()].concat();
        assert_eq!(packet_len(&stream), Some(Ok(a.len())));
        assert_eq!(packet_len(&stream[a.len()..]), Some(Ok(b.len())));
        for cut in 0..a.len() {
            assert_eq!(packet_len(&a[..cut]), None, "cut {cut}");
        }
        assert_eq!(packet_len(b"XXXX"), Some(Err(DropReason::BadMagic)));
    }

    #[test]
    fn merger_keeps_fields_a_record_does_not_carry() {
        let reg = Registry::bundled();
        let mut m = Merger::new(&reg);
        let full = sample();
        for r in parse(&packet(1, &[full])).unwrap().records() {
            m.apply(&reg, &r, 0).unwrap();
        }
        // A trade-only tick: quote/OHLC/OI flags clear, no depth record.
        let trade = Tick { seq: 43, ltp: 285100, flags: 0, bid: 0, ask: 0, open: 0, ..full };
        let r = parse(&packet(2, &[trade])).unwrap().records().next().unwrap();
        let t = *m.apply(&reg, &r, 0).unwrap();
        assert_eq!((t.seq, t.ltp, t.bid, t.open, t.depth), (43, 285100, full.bid, full.open, full.depth));
        let unknown = Record::Tick(Tick { token: 99_999_999, ..full });
        assert_eq!(m.apply(&reg, &unknown, 0).unwrap_err(), DropReason::UnknownToken);
        let bad = Record::Depth(Tick { depth_levels: 9, ..full });
        assert_eq!(m.apply(&reg, &bad, 0).unwrap_err(), DropReason::BadLevels);
    }

    /// Fuzz-style: random and mutated packets never panic.
    #[test]
    fn random_packets_never_panic() {
        let reg = Registry::bundled();
        let mut m = Merger::new(&reg);
        let mut rng = fastrand::Rng::with_seed(1);
        let good = packet(1, &[sample(), sample()]);
        for _ in 0..100_000 {
            let mut b = good.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..b.len());
                b[at] = rng.u8(..);
            }
            b.truncate(rng.usize(0..=b.len()));
            let _ = packet_len(&b);
            if let Ok(p) = parse(&b) {
                for r in p.records() {
                    let _ = m.apply(&reg, &r, 0);
                }
            }
        }
    }

    /// Any tick: every field the wire carries, any flags, 0..=5 depth levels.
    fn any_tick() -> impl proptest::strategy::Strategy<Value = Tick> {
        use proptest::prelude::*;
        let level =
            (any::<i64>(), any::<u32>(), any::<u32>()).prop_map(|(price, qty, orders)| Level { price, qty, orders });
        (
            (
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
                any::<u32>(),
                any::<u64>(),
                any::<i64>(),
                any::<i64>(),
            ),
            (any::<u32>(), any::<u32>(), [any::<i64>(); 4], any::<u64>(), any::<u64>(), 0u8..16, 0u8..=5),
            (
                [level.clone(), level.clone(), level.clone(), level.clone(), level.clone()],
                [level.clone(), level.clone(), level.clone(), level.clone(), level],
            ),
        )
            .prop_map(
                |(
                    (token, seq, ts_ns, ltp, ltq, volume, bid, ask),
                    (bid_qty, ask_qty, ohlc, oi, prev_oi, flags, levels),
                    (bids, asks),
                )| {
                    let mut t = Tick {
                        token,
                        seq,
                        ts_ns,
                        ltp,
                        ltq,
                        volume,
                        bid,
                        ask,
                        bid_qty,
                        ask_qty,
                        oi,
                        prev_oi,
                        flags,
                        depth_levels: levels,
                        ..Tick::default()
                    };
                    [t.open, t.high, t.low, t.close] = ohlc;
                    t.depth.bids = bids;
                    t.depth.asks = asks;
                    t
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]

        /// Encode then decode: every tick's wire fields come back exactly,
        /// as a tick record and, with `FLAG_DEPTH`, a depth record; the
        /// packet's sequence and record count too.
        #[test]
        fn prop_packets_round_trip(ticks in proptest::collection::vec(any_tick(), 0..6), packet_seq in proptest::prelude::any::<u64>()) {
            let bytes = packet(packet_seq, &ticks);
            let p = parse(&bytes).unwrap();
            let want_count: u16 = ticks.iter().map(records_for).sum();
            proptest::prop_assert_eq!((p.packet_seq, p.count), (packet_seq, want_count));
            let mut want = Vec::new();
            for t in &ticks {
                let head = Tick { token: t.token, seq: t.seq, ts_ns: t.ts_ns, ..Tick::default() };
                want.push(Record::Tick(Tick {
                    flags: t.flags & (FLAG_QUOTE | FLAG_OHLC | FLAG_OI),
                    ltp: t.ltp, ltq: t.ltq, volume: t.volume, bid: t.bid, ask: t.ask, bid_qty: t.bid_qty, ask_qty: t.ask_qty,
                    open: t.open, high: t.high, low: t.low, close: t.close, oi: t.oi, prev_oi: t.prev_oi,
                    ..head
                }));
                if t.flags & FLAG_DEPTH != 0 {
                    want.push(Record::Depth(Tick { depth_levels: t.depth_levels, depth: t.depth, ..head }));
                }
            }
            proptest::prop_assert_eq!(p.records().collect::<Vec<_>>(), want);
            // As a stream: the packet's length is known exactly when it is
            // whole, never before.
            proptest::prop_assert_eq!(packet_len(&bytes), Some(Ok(bytes.len())));
            let stream = [bytes.clone(), bytes.clone()].concat();
            proptest::prop_assert_eq!(packet_len(&stream), Some(Ok(bytes.len())));
            for cut in [0, 3, 4, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
                if cut < bytes.len() {
                    proptest::prop_assert_eq!(packet_len(&bytes[..cut]), None, "cut {}", cut);
                }
            }
        }
    }
}
