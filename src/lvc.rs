//! Last-value cache: the newest `Tick` of every slot, written by the one
//! feed thread that owns the slot and read by any worker (snapshots).
//!
//! Each entry is a seqlock over `TICK_WORDS` `AtomicU64` words, so readers
//! never block the writer and the code needs no `unsafe`: a torn read is
//! impossible to observe because the version is checked around the copy.
//!
//! Ordering: the writer bumps `version` to odd (Relaxed) then issues a
//! Release fence before the word stores, and publishes with a Release store
//! of the even version; the reader's Acquire load of `version` pairs with
//! that Release store, and its Acquire fence after the word loads pairs
//! with the writer's first fence (the classic Boehm seqlock recipe).

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::instrument::Slot;
use crate::tick::{Tick, TICK_WORDS};

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

    /// Store `tick` as the newest value of `slot`.
    ///
    /// Must only be called by the slot's single writer (the feed thread that
    /// owns it); concurrent writers to one slot would interleave words.
    pub fn store(&self, slot: Slot, tick: &Tick) {
        let e = &self.entries[slot.idx()];
        let v = e.version.load(Ordering::Relaxed);
        e.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let src: &[u64; TICK_WORDS] = bytemuck::cast_ref(tick);
        for (w, s) in e.words.iter().zip(src) {
            w.store(*s, Ordering::Relaxed);
        }
        e.version.store(v.wrapping_add(2), Ordering::Release);
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
