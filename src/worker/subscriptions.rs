//! What a connection receives: instrument subscriptions (snapshot then
//! live), the watch-all set, named channels; and this worker's interest
//! bits, which tell the feeds which slots and channels it wants.

use std::sync::atomic::{fence, Ordering};

use super::fanout::queue_own;
use super::{ChanSub, Worker};
use crate::channel::ChannelId;
use crate::dialect::ChanKind;
use crate::encode::{Encoding, Marks};
use crate::instrument::Slot;
use crate::subs::{Added, ConnId, Delivery};

impl Worker {
    /// Subscribe `id` to `slot`; a new subscription gets the cached last
    /// value first (snapshot-then-live). Returns false at the per-connection
    /// limit.
    pub(super) fn subscribe(
        &mut self,
        id: ConnId,
        slot: Slot,
        enc: Encoding,
        delivery: Delivery,
        now: u64,
    ) -> Result<(), &'static str> {
        let limit = self.shared.config.max_subscriptions;
        let known = self.subs.contains(slot, id);
        let c = self.conn(id).ok_or("connection gone")?;
        if !known && c.slots.len() + c.channels.len() >= limit {
            return Err("subscription limit reached");
        }
        if !known && c.user.as_ref().is_some_and(|u| !u.try_subscribe()) {
            return Err("the user's subscription limit reached");
        }
        if let Some(d) = self.shared.hub.demand.as_deref() {
            match self.subs.get(slot, id) {
                Some(old) => d.change(slot, old.enc.mode, enc.mode),
                None => {
                    if let Err(why) = d.add(slot, enc.mode) {
                        let user = self.conns[id.0 as usize].as_ref().and_then(|c| c.user.as_ref());
                        if let Some(u) = user {
                            u.unsubscribed(1); // the slot try_subscribe took above
                        }
                        return Err(why);
                    }
                }
            }
        }
        match self.subs.subscribe(slot, id, enc, delivery) {
            Added::Updated => return Ok(()),
            Added::New { first } => {
                if first {
                    // SeqCst bit before the cache read: see `ring` and `lvc`.
                    self.shared.hub.interest.set(slot, self.id);
                    // A SeqCst RMW alone does not order the later Acquire
                    // loads of the cache; the fence pairs with the feed's.
                    fence(Ordering::SeqCst);
                }
            }
        }
        let c = self.conns[id.0 as usize].as_mut().expect("checked above");
        c.slots.push(slot);
        if let Some(t) = self.shared.hub.lvc.load(slot) {
            let ins = self.shared.registry.get(slot);
            let sub = self.subs.subscribers_mut(slot).last_mut().expect("a new subscription is pushed last");
            debug_assert_eq!(sub.conn, id);
            if c.congested {
                sub.pending = true; // delivered when the client drains
            } else {
                sub.last_seq = t.seq;
                let marks = Marks { snapshot: true, conflated: false };
                self.frames += u64::from(queue_own(&mut self.scratch, c, enc, &t, ins, marks, now));
            }
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Remove `id`'s subscription to `slot`; false if there was none.
    pub(super) fn unsubscribe(&mut self, id: ConnId, slot: Slot) -> bool {
        if let (Some(d), Some(s)) = (&self.shared.hub.demand, self.subs.get(slot, id)) {
            d.remove(slot, s.enc.mode);
        }
        match self.subs.unsubscribe(slot, id) {
            None => false,
            Some(now_empty) => {
                if now_empty && self.all_instruments.is_empty() {
                    self.shared.hub.interest.clear(slot, self.id);
                }
                if let Some(c) = self.conn(id) {
                    if let Some(i) = c.slots.iter().position(|&s| s == slot) {
                        c.slots.remove(i);
                    }
                    if let Some(u) = &c.user {
                        u.unsubscribed(1);
                    }
                }
                true
            }
        }
    }

    /// `id` now receives every instrument (a Trading WS client before its
    /// first subscribe). The first such connection makes this worker
    /// interested in every slot; the caller then takes the cached values
    /// (the SeqCst fence orders the bits before those reads, as in
    /// `subscribe`). False if it was already there.
    pub(super) fn join_all_instruments(&mut self, id: ConnId) -> bool {
        if self.all_instruments.contains(&id) {
            return false;
        }
        if self.all_instruments.is_empty() {
            for (slot, _) in self.shared.registry.iter() {
                self.shared.hub.interest.set(slot, self.id);
            }
            fence(Ordering::SeqCst);
        }
        self.all_instruments.push(id);
        true
    }

    /// `id` no longer receives every instrument. When the last such
    /// connection leaves, slots nobody here subscribes to lose this
    /// worker's interest. False if it was not there.
    pub(super) fn leave_all_instruments(&mut self, id: ConnId) -> bool {
        let Some(i) = self.all_instruments.iter().position(|&x| x == id) else { return false };
        self.all_instruments.swap_remove(i);
        if self.all_instruments.is_empty() {
            for slot in (0..self.shared.registry.len()).map(|s| Slot(s as u32)) {
                if self.subs.subscribers_mut(slot).is_empty() {
                    self.shared.hub.interest.clear(slot, self.id);
                }
            }
        }
        true
    }

    /// Subscribe `id` to the channel `name`, received as `kind`: checks the
    /// name, privacy (`private:<user>:…` is its user's alone), the
    /// per-connection and per-user limits. `Ok(false)`: already subscribed.
    ///
    /// # Errors
    /// Why not, for the client.
    pub(super) fn join_channel(&mut self, id: ConnId, name: &str, kind: ChanKind) -> Result<bool, String> {
        let limit = self.shared.config.max_subscriptions;
        let c = self.conns.get(id.0 as usize).and_then(Option::as_ref).ok_or("connection gone")?;
        if let Some(owner) = crate::channel::private_owner(name) {
            if c.user.as_ref().is_none_or(|u| *u.id != *owner) {
                return Err("private channel of another user".into());
            }
        }
        let existing = self.shared.channels.lookup(name);
        if existing.is_some_and(|ch| c.channels.contains(&ch)) {
            return Ok(false);
        }
        if c.slots.len() + c.channels.len() >= limit {
            return Err(format!("subscription limit reached ({limit} per connection)"));
        }
        let ch = self.shared.channels.id(name).map_err(|e| e.message().to_string())?;
        if c.user.as_ref().is_some_and(|u| !u.try_subscribe()) {
            return Err("the user's subscription limit reached".into());
        }
        let i = ch.0 as usize;
        if self.chan_subs.len() <= i {
            self.chan_subs.resize_with(i + 1, Default::default);
        }
        if self.chan_subs[i].is_empty() {
            self.shared.hub.channel_interest.set(ch, self.id);
        }
        let last_seq = self.shared.channels.current_seq(ch);
        self.chan_subs[i].push(ChanSub { conn: id, kind, last_seq });
        if let Some(c) = self.conn(id) {
            c.channels.push(ch);
        }
        Ok(true)
    }

    /// Unsubscribe `id` from channel `ch`; false if it was not subscribed.
    pub(super) fn unsubscribe_channel(&mut self, id: ConnId, ch: ChannelId) -> bool {
        if !self.remove_channel_sub(id, ch) {
            return false;
        }
        if let Some(c) = self.conn(id) {
            c.channels.retain(|&x| x != ch);
            if let Some(u) = &c.user {
                u.unsubscribed(1);
            }
        }
        true
    }

    pub(super) fn remove_channel_sub(&mut self, id: ConnId, ch: ChannelId) -> bool {
        let Some(list) = self.chan_subs.get_mut(ch.0 as usize) else { return false };
        let Some(i) = list.iter().position(|s| s.conn == id) else { return false };
        list.swap_remove(i);
        if list.is_empty() {
            self.shared.hub.channel_interest.clear(ch, self.id);
        }
        true
    }
}
