//! Last-value cache: the newest `Tick` of every slot, written by the feed
//! threads and read by any worker (snapshots, conflation).
//!
//! Each entry is a seqlock over `TICK_WORDS` `AtomicU64` words, so readers
//! never block writers and the code needs no `unsafe`: a torn read is
//! impossible to observe because the version is checked around the copy.
//!
//! Writers: usually one feed owns a slot, but two sources may carry the same
//! instrument (A/B feeds), so a writer takes the entry by moving `version`
//! from even to odd with a CAS (uncontended: one atomic op, as before) and
//! a store whose `seq` is not newer than the cached one is skipped, so the
//! cache never goes back in time.
//!
//! Ordering: the writer's CAS (Acquire, so it sees the previous writer's
//! words) is followed by a Release fence before the word stores, and it
//! publishes with a Release store of the even version; the reader's Acquire
//! load of `version` pairs with that Release store, and its Acquire fence
//! after the word loads pairs with the writer's fence (the classic Boehm
//! seqlock recipe).

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::instrument::Slot;
use crate::tick::{Tick, TICK_WORDS};

const _: () = assert!(std::mem::offset_of!(Tick, seq) == 8, "store() reads seq as word 1");

/// One cache line-aligned seqlock entry.
#[repr(align(64))]
struct Entry {
    /// Even: stable; odd: a write is in progress. Incremented twice per write.
    version: AtomicU64,
    /// The tick as words (`Tick` is `Pod`).
    words: [AtomicU64; TICK_WORDS],
}

/// Per-slot newest tick. Single writer per slot (its feed), many readers.
pub struct LastValues {
    entries: Box<[Entry]>,
}

impl LastValues {
    /// A cache for `slots` instruments, all empty (`seq == 0`).
    pub fn new(slots: usize) -> LastValues {
        let entries = (0..slots)
            .map(|_| Entry { version: AtomicU64::new(0), words: std::array::from_fn(|_| AtomicU64::new(0)) })
            .collect();
        LastValues { entries }
    }

    /// Store `tick` as the newest value of `slot`, unless the cache already
    /// holds a newer `seq`. Returns whether it was stored.
    pub fn store(&self, slot: Slot, tick: &Tick) -> bool {
        let e = &self.entries[slot.idx()];
        let v = loop {
            let v = e.version.load(Ordering::Relaxed);
            if v & 1 == 0 && e.version.compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break v;
            }
            std::hint::spin_loop();
        };
        fence(Ordering::Release);
        // `seq` is word 1 of a `Tick` (after token and slot).
        let newer = tick.seq > e.words[1].load(Ordering::Relaxed);
        if newer {
            let src: &[u64; TICK_WORDS] = bytemuck::cast_ref(tick);
            for (w, s) in e.words.iter().zip(src) {
                w.store(*s, Ordering::Relaxed);
            }
        }
        e.version.store(v + 2, Ordering::Release);
        newer
    }

    /// The newest tick of `slot`, or `None` if it never ticked.
    pub fn load(&self, slot: Slot) -> Option<Tick> {
        let e = &self.entries[slot.idx()];
        let mut out = [0u64; TICK_WORDS];
        loop {
            let v1 = e.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            for (o, w) in out.iter_mut().zip(&e.words) {
                *o = w.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if e.version.load(Ordering::Relaxed) == v1 {
                let tick: Tick = bytemuck::cast(out);
                return (tick.seq != 0).then_some(tick);
            }
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn empty_until_stored() {
        let lv = LastValues::new(2);
        assert!(lv.load(Slot(0)).is_none());
        let t = Tick { token: 5, seq: 9, ltp: 100, ..Tick::default() };
        lv.store(Slot(1), &t);
        assert_eq!(lv.load(Slot(1)), Some(t));
        assert!(lv.load(Slot(0)).is_none());
    }

    #[test]
    fn older_seq_never_replaces_newer() {
        let lv = LastValues::new(1);
        assert!(lv.store(Slot(0), &Tick { seq: 5, ltp: 5, ..Tick::default() }));
        assert!(!lv.store(Slot(0), &Tick { seq: 4, ltp: 4, ..Tick::default() }));
        assert_eq!(lv.load(Slot(0)).unwrap().ltp, 5);
    }

    /// Stress: two writers race on one slot; every read is one whole tick
    /// and the cached seq never goes back.
    #[test]
    fn two_writers_never_tear() {
        let lv = Arc::new(LastValues::new(1));
        let writers: Vec<_> = (0..2u64)
            .map(|k| {
                let lv = lv.clone();
                std::thread::spawn(move || {
                    for s in (1..=100_000u64).filter(|s| s % 2 == k) {
                        lv.store(Slot(0), &Tick { seq: s, ltp: s as i64, volume: s, oi: s, ..Tick::default() });
                    }
                })
            })
            .collect();
        let mut last = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            if let Some(t) = lv.load(Slot(0)) {
                assert_eq!((t.ltp as u64, t.volume, t.oi), (t.seq, t.seq, t.seq), "torn");
                assert!(t.seq >= last);
                last = t.seq;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(lv.load(Slot(0)).unwrap().seq, 100_000);
    }

    /// Stress: one writer stores ticks whose every field equals `seq`;
    /// readers must never see a mix of two writes, and `seq` never goes back.
    #[test]
    fn readers_never_see_torn_ticks() {
        let lv = Arc::new(LastValues::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (lv, stop) = (lv.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(t) = lv.load(Slot(0)) {
                            let s = t.seq;
                            assert!(s >= last, "seq went back: {s} < {last}");
                            assert_eq!(
                                (t.ltp as u64, t.volume, t.oi, t.depth.asks[4].price as u64),
                                (s, s, s, s),
                                "torn read"
                            );
                            last = s;
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        for s in 1..=200_000u64 {
            let mut t = Tick { seq: s, ltp: s as i64, volume: s, oi: s, ..Tick::default() };
            t.depth.asks[4].price = s as i64;
            lv.store(Slot(0), &t);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}
