//! The subscription table of one worker: for every slot, who wants it and
//! how. Pure data, no I/O, no locks (each worker owns its table).
//!
//! A token subscribe is an array index and a push onto a `SmallVec`: no
//! hashing, no strings. Each entry also carries the per-subscription state
//! the delivery guarantees need (last `seq` sent, rate cap, pending flag),
//! so the fan-out loop touches one cache-friendly array per tick.

use smallvec::SmallVec;

use crate::encode::Encoding;
use crate::instrument::Slot;

/// A connection within one worker (index into its connection slab).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u32);

/// What happens to a subscription's ticks when its client cannot keep up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Keep the newest value per instrument; tell the client with `gap`.
    Conflate,
    /// Never drop: close with 1013 instead.
    Lossless,
    /// At most one update per `interval_ns`, trailing edge (the newest value
    /// is delivered when the interval ends).
    MaxRate {
        /// Minimum spacing between updates, ns.
        interval_ns: u64,
    },
}

impl Delivery {
    /// Protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Conflate => "conflate",
            Delivery::Lossless => "lossless",
            Delivery::MaxRate { .. } => "max_rate",
        }
    }
}

/// One (client, instrument) subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sub {
    /// Subscriber.
    pub conn: ConnId,
    /// Which cached frame it receives.
    pub enc: Encoding,
    /// Policy under pressure.
    pub delivery: Delivery,
    /// Highest `seq` delivered (0: none yet). Frames with `seq <= last_seq`
    /// are never sent, which makes snapshot-then-live duplicate-free.
    pub last_seq: u64,
    /// Rate cap: earliest time the next update may go out, ns.
    pub next_ok_ns: u64,
    /// A newer value than `last_seq` was held back (rate cap or slow client).
    pub pending: bool,
}

/// Subscribers inline per slot before spilling to the heap.
pub type SubList = SmallVec<[Sub; 2]>;

/// Result of [`SubTable::subscribe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A new subscription; `first` when the slot had no subscriber before.
    New {
        /// The slot went from zero to one subscriber on this worker.
        first: bool,
    },
    /// Already subscribed: encoding and delivery were updated.
    Updated,
}

/// Per-slot subscriber lists, plus a per-connection membership bitset so
/// "is `conn` already on `slot`?" is one bit test, not a scan of the slot's
/// list (which holds thousands of entries in a broadcast).
pub struct SubTable {
    by_slot: Vec<SubList>,
    /// Bit `slot` of `member[conn]`: `conn` is subscribed to `slot`. Grown
    /// lazily to the highest slot a connection used; freed by `forget_conn`.
    member: Vec<Vec<u64>>,
    total: usize,
}

impl SubTable {
    /// An empty table for `slots` instruments.
    pub fn new(slots: usize) -> SubTable {
        SubTable { by_slot: (0..slots).map(|_| SubList::new()).collect(), member: Vec::new(), total: 0 }
    }

    /// Is `conn` subscribed to `slot`? One bit test.
    #[inline]
    pub fn contains(&self, slot: Slot, conn: ConnId) -> bool {
        self.member
            .get(conn.0 as usize)
            .and_then(|bits| bits.get(slot.idx() / 64))
            .is_some_and(|w| w & (1 << (slot.idx() % 64)) != 0)
    }

    #[inline]
    fn set_member(&mut self, slot: Slot, conn: ConnId, on: bool) {
        let c = conn.0 as usize;
        if self.member.len() <= c {
            self.member.resize_with(c + 1, Vec::new);
        }
        let bits = &mut self.member[c];
        let w = slot.idx() / 64;
        if bits.len() <= w {
            bits.resize(w + 1, 0);
        }
        if on {
            bits[w] |= 1 << (slot.idx() % 64);
        } else {
            bits[w] &= !(1 << (slot.idx() % 64));
        }
    }

    /// Subscribe `conn` to `slot` (or change its encoding and delivery).
    /// A new subscription is a bit test and a push (it is then the last
    /// entry of `subscribers_mut(slot)`): no scan, no hashing.
    #[inline]
    pub fn subscribe(&mut self, slot: Slot, conn: ConnId, enc: Encoding, delivery: Delivery) -> Added {
        debug_assert!(slot.idx() < self.by_slot.len());
        if self.contains(slot, conn) {
            if let Some(s) = self.get_mut(slot, conn) {
                s.enc = enc;
                s.delivery = delivery;
            }
            return Added::Updated;
        }
        let list = &mut self.by_slot[slot.idx()];
        let first = list.is_empty();
        list.push(Sub { conn, enc, delivery, last_seq: 0, next_ok_ns: 0, pending: false });
        self.total += 1;
        self.set_member(slot, conn, true);
        Added::New { first }
    }

    /// Remove `conn` from `slot`. Returns `Some(now_empty)` if it was there.
    #[inline]
    pub fn unsubscribe(&mut self, slot: Slot, conn: ConnId) -> Option<bool> {
        if !self.contains(slot, conn) {
            return None;
        }
        let list = &mut self.by_slot[slot.idx()];
        let i = list.iter().position(|s| s.conn == conn)?;
        list.swap_remove(i);
        let now_empty = list.is_empty();
        self.total -= 1;
        self.set_member(slot, conn, false);
        Some(now_empty)
    }

    /// Release the membership bits of a closed connection (after every
    /// slot was unsubscribed), so a reused `ConnId` starts empty.
    pub fn forget_conn(&mut self, conn: ConnId) {
        if let Some(bits) = self.member.get_mut(conn.0 as usize) {
            debug_assert!(bits.iter().all(|&w| w == 0), "forget_conn before unsubscribing");
            *bits = Vec::new();
        }
    }

    /// The subscription of `conn` on `slot`.
    #[inline]
    pub fn get_mut(&mut self, slot: Slot, conn: ConnId) -> Option<&mut Sub> {
        self.by_slot[slot.idx()].iter_mut().find(|s| s.conn == conn)
    }

    /// The subscription of `conn` on `slot`.
    #[inline]
    pub fn get(&self, slot: Slot, conn: ConnId) -> Option<&Sub> {
        self.by_slot[slot.idx()].iter().find(|s| s.conn == conn)
    }

    /// Everyone subscribed to `slot`.
    #[inline]
    pub fn subscribers_mut(&mut self, slot: Slot) -> &mut [Sub] {
        &mut self.by_slot[slot.idx()]
    }

    /// Number of subscriptions in the table.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when nobody is subscribed to anything.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Format;
    use crate::tick::Mode;

    const JSON_LTP: Encoding = Encoding { format: Format::Json, mode: Mode::Ltp };
    const JSON_QUOTE: Encoding = Encoding { format: Format::Json, mode: Mode::Quote };

    #[test]
    fn subscribe_update_unsubscribe() {
        let mut t = SubTable::new(4);
        assert_eq!(t.subscribe(Slot(1), ConnId(7), JSON_LTP, Delivery::Conflate), Added::New { first: true });
        assert_eq!(t.subscribe(Slot(1), ConnId(8), JSON_LTP, Delivery::Conflate), Added::New { first: false });
        assert_eq!(t.subscribe(Slot(1), ConnId(7), JSON_QUOTE, Delivery::Lossless), Added::Updated);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(Slot(1), ConnId(7)).unwrap().enc, JSON_QUOTE);
        assert_eq!(t.unsubscribe(Slot(1), ConnId(7)), Some(false));
        assert_eq!(t.unsubscribe(Slot(1), ConnId(7)), None);
        assert_eq!(t.unsubscribe(Slot(1), ConnId(8)), Some(true));
        assert!(t.is_empty());
        assert!(!t.contains(Slot(1), ConnId(7)));
        t.forget_conn(ConnId(7));
        assert_eq!(t.subscribe(Slot(3), ConnId(7), JSON_LTP, Delivery::Conflate), Added::New { first: true });
        assert!(t.contains(Slot(3), ConnId(7)) && !t.contains(Slot(3), ConnId(8)));
        assert!(t.subscribers_mut(Slot(1)).is_empty());
    }

    #[test]
    fn many_subscribers_spill_and_stay_consistent() {
        let mut t = SubTable::new(1);
        for c in 0..1000 {
            t.subscribe(Slot(0), ConnId(c), JSON_LTP, Delivery::Conflate);
        }
        for c in (0..1000).step_by(2) {
            assert_eq!(t.unsubscribe(Slot(0), ConnId(c)), Some(false));
        }
        assert_eq!(t.len(), 500);
        let mut left: Vec<u32> = t.subscribers_mut(Slot(0)).iter().map(|s| s.conn.0).collect();
        left.sort_unstable();
        assert_eq!(left, (1..1000).step_by(2).collect::<Vec<_>>());
    }
}
