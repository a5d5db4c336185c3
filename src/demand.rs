//! What local clients want of an upstream that limits how much it gives
//! (Kite: 3 connections × 3,000 instruments): for each instrument, how many
//! subscriptions want each mode, and which instruments are admitted
//! against the upstream's capacity.
//!
//! Workers change it when a subscription is taken, changes mode or ends
//! (the control plane: one short lock, never per tick); a subscription to
//! an instrument nobody wants yet is refused, with a reason for the client,
//! when the upstream is full. The source reads the wanted set when the
//! version moves and subscribes upstream in each instrument's highest mode.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::instrument::Slot;
use crate::tick::Mode;

/// What a client is told when the upstream has no room for another instrument.
pub const FULL: &str = "the upstream feed is at its instrument limit; unsubscribe something first";

/// A refused subscription's reason for the client: the per-connection
/// limits say their number (`max_subscriptions`); the upstream's does not
/// (it is the server's, not the connection's).
pub fn reason(why: &str, max_subscriptions: usize) -> String {
    if why == FULL {
        why.to_string()
    } else {
        format!("{why} ({max_subscriptions} per connection)")
    }
}

/// Local demand on a limited upstream.
pub struct Demand {
    inner: Mutex<Inner>,
    version: AtomicU64,
    capacity: usize,
}

struct Inner {
    /// Per slot: subscriptions in ltp, quote, depth.
    modes: Vec<[u32; 3]>,
    /// Slots with at least one subscription.
    admitted: usize,
}

impl Demand {
    /// No demand for `slots` instruments; at most `capacity` wanted at once.
    pub fn new(slots: usize, capacity: usize) -> Demand {
        Demand {
            inner: Mutex::new(Inner { modes: vec![[0; 3]; slots], admitted: 0 }),
            version: AtomicU64::new(0),
            capacity,
        }
    }

    /// A new subscription to `slot` in `mode`.
    ///
    /// # Errors
    /// [`FULL`]: `slot` is wanted by nobody yet and the upstream is full.
    pub fn add(&self, slot: Slot, mode: Mode) -> Result<(), &'static str> {
        let mut g = self.inner.lock();
        let Inner { modes, admitted } = &mut *g;
        let m = &mut modes[slot.idx()];
        if m.iter().all(|&n| n == 0) {
            if *admitted >= self.capacity {
                return Err(FULL);
            }
            *admitted += 1;
        }
        m[mode as usize - 1] += 1;
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// A subscription to `slot` changed from `from` to `to`.
    pub fn change(&self, slot: Slot, from: Mode, to: Mode) {
        if from == to {
            return;
        }
        let mut g = self.inner.lock();
        let m = &mut g.modes[slot.idx()];
        m[from as usize - 1] = m[from as usize - 1].saturating_sub(1);
        m[to as usize - 1] += 1;
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A subscription to `slot` in `mode` ended.
    pub fn remove(&self, slot: Slot, mode: Mode) {
        let mut g = self.inner.lock();
        let Inner { modes, admitted } = &mut *g;
        let m = &mut modes[slot.idx()];
        if m[mode as usize - 1] == 0 {
            debug_assert!(false, "removing demand that was never added");
            return;
        }
        m[mode as usize - 1] -= 1;
        if m.iter().all(|&n| n == 0) {
            *admitted -= 1;
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Changes so far (the source re-reads the wanted set when it moves).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every wanted instrument with the highest mode any subscription
    /// wants, in slot order, into `out` (replaced); returns the version read.
    pub fn wanted(&self, out: &mut Vec<(Slot, Mode)>) -> u64 {
        out.clear();
        let g = self.inner.lock();
        for (i, m) in g.modes.iter().enumerate() {
            let mode = match m {
                [_, _, d] if *d > 0 => Mode::Depth,
                [_, q, _] if *q > 0 => Mode::Quote,
                [l, _, _] if *l > 0 => Mode::Ltp,
                _ => continue,
            };
            out.push((Slot(i as u32), mode));
        }
        self.version.load(Ordering::Acquire)
    }

    /// Instruments wanted now.
    pub fn admitted(&self) -> usize {
        self.inner.lock().admitted
    }

    /// The most instruments the upstream takes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_mode_is_wanted_and_capacity_counts_instruments() {
        let d = Demand::new(10, 2);
        let mut out = Vec::new();
        d.add(Slot(3), Mode::Ltp).unwrap();
        d.add(Slot(3), Mode::Depth).unwrap();
        d.add(Slot(1), Mode::Quote).unwrap();
        let v = d.wanted(&mut out);
        assert_eq!(out, [(Slot(1), Mode::Quote), (Slot(3), Mode::Depth)]);
        assert_eq!(d.admitted(), 2);
        assert_eq!(d.add(Slot(5), Mode::Ltp), Err(FULL), "a third instrument does not fit");
        d.add(Slot(1), Mode::Ltp).unwrap(); // a wanted one always fits
        d.remove(Slot(3), Mode::Depth);
        d.change(Slot(1), Mode::Quote, Mode::Ltp);
        assert!(d.version() > v);
        d.wanted(&mut out);
        assert_eq!(out, [(Slot(1), Mode::Ltp), (Slot(3), Mode::Ltp)]);
        d.remove(Slot(3), Mode::Ltp);
        assert_eq!(d.admitted(), 1);
        d.add(Slot(5), Mode::Ltp).unwrap();
        d.wanted(&mut out);
        assert_eq!(out, [(Slot(1), Mode::Ltp), (Slot(5), Mode::Ltp)]);
        assert_eq!(reason(FULL, 3000), FULL, "the upstream's limit is not the connection's");
        assert_eq!(reason("subscription limit reached", 2), "subscription limit reached (2 per connection)");
    }
}
