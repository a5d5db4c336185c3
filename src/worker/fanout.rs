//! The hot path: drain the rings and write each tick to its subscribers,
//! encoded once per encoding; the slow-consumer policy (congest, hold back,
//! relieve with the newest value); channel messages; resynchronising after
//! a ring overrun.

use std::cmp::Reverse;

use super::conn::{self, Conn, Phase};
use super::{CloseReason, Worker, DRAIN_LIMIT};
use crate::dialect::ChanKind;
use crate::encode::{self, Encoding, Marks};
use crate::instrument::{Instrument, Slot};
use crate::metrics::Counters;
use crate::subs::{ConnId, Delivery};
use crate::tick::Tick;
use crate::ws::close;

impl Worker {
    /// Drain every ring (up to a limit each) and fan the ticks out.
    pub(super) fn drain(&mut self, now: u64) -> usize {
        let mut rings = std::mem::take(&mut self.rings);
        let mut n = 0;
        for ring in &mut rings {
            let avail = ring.slots().min(DRAIN_LIMIT);
            if avail == 0 {
                continue;
            }
            let chunk = ring.read_chunk(avail).expect("slots() said these are available");
            let (a, b) = chunk.as_slices();
            for t in a.iter().chain(b) {
                self.fan_out(t, now);
            }
            chunk.commit_all();
            n += avail;
        }
        self.rings = rings;
        n
    }

    /// The hot path: one tick to every subscriber of its slot.
    #[inline]
    pub(super) fn fan_out(&mut self, t: &Tick, now: u64) {
        let slot = Slot(t.slot);
        let limit = self.shared.config.out_buffer_bytes;
        let ins = self.shared.registry.get(slot);
        self.cache.reset();
        let mut delivered = false;
        for sub in self.subs.subscribers_mut(slot) {
            if t.seq <= sub.last_seq {
                continue; // already sent (snapshot overlap)
            }
            let Some(c) = self.conns.get_mut(sub.conn.0 as usize).and_then(Option::as_mut) else {
                debug_assert!(false, "subscription of a dropped connection");
                continue;
            };
            if let Delivery::MaxRate { interval_ns } = sub.delivery {
                if now < sub.next_ok_ns {
                    if !sub.pending {
                        sub.pending = true;
                        self.timers.push(Reverse((sub.next_ok_ns, sub.conn.0, slot.0)));
                    }
                    continue;
                }
                sub.next_ok_ns = now.saturating_add(interval_ns);
            }
            if c.congested || c.phase != Phase::Open {
                if sub.delivery == Delivery::Lossless && c.phase == Phase::Open {
                    c.close(
                        close::TRY_AGAIN_LATER,
                        "slow consumer: lossless subscription fell behind the out-buffer limit",
                    );
                    Counters::inc(&self.shared.counters.slow_disconnects);
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(sub.conn);
                    }
                } else {
                    sub.pending = true;
                }
                continue;
            }
            if sub.enc.format == encode::Format::Batched {
                sub.last_seq = t.seq;
                c.batch.mark(slot);
                delivered = true;
                continue;
            }
            if matches!(sub.delivery, Delivery::MaxRate { .. }) && std::mem::take(&mut sub.pending) {
                // A rate cap held ticks back and this one arrived before the
                // trailing-edge timer ran (a late turn): it carries the
                // `conflated` mark, so it is this client's own frame.
                let marks = Marks { snapshot: false, conflated: true };
                if !queue_own(&mut self.scratch, c, sub.enc, t, ins, marks, now) {
                    continue;
                }
            } else {
                let f = self.cache.get(sub.enc, t, ins);
                if f.is_empty() {
                    continue; // nothing in this format for this tick (an exchange trade stream, no trade)
                }
                c.data(sub.enc.format, f, now);
            }
            sub.last_seq = t.seq;
            self.frames += 1;
            delivered = true;
            if c.data_pending() > limit {
                congest(c, &self.shared.counters);
            }
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(sub.conn);
            }
        }
        for &id in &self.all_instruments {
            if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
                c.batch.mark(slot);
            }
        }
        if delivered {
            self.batch_ts.push(t.ts_ns);
        }
    }

    /// Mark `id` congested if its data lane is past the out-buffer limit.
    pub(super) fn check_congestion(&mut self, id: ConnId) {
        let limit = self.shared.config.out_buffer_bytes;
        let counters = &self.shared.counters;
        if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
            if !c.congested && c.data_pending() > limit {
                congest(c, counters);
            }
        }
    }

    /// Deliver the newest value of a held-back subscription, marked
    /// `conflated`; a `gap` notice first when `with_gap` and seqs were skipped.
    pub(super) fn deliver_latest(&mut self, id: ConnId, slot: Slot, with_gap: bool, now: u64) {
        if self.conn(id).is_none_or(|c| c.phase != Phase::Open) {
            return; // never data after a close frame
        }
        let Some(t) = self.shared.hub.lvc.load(slot) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(slot, id) else {
            return;
        };
        sub.pending = false;
        if t.seq <= sub.last_seq {
            return;
        }
        let (from, to) = (sub.last_seq + 1, t.seq - 1);
        let conflated = to >= from && sub.last_seq != 0;
        sub.last_seq = t.seq;
        let enc = sub.enc;
        if let Delivery::MaxRate { interval_ns } = sub.delivery {
            sub.next_ok_ns = now.saturating_add(interval_ns);
        }
        let ins = self.shared.registry.get(slot);
        let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        if with_gap && conflated {
            if let Some(notice) = c.proto.gap_notice(t.token, from, to) {
                c.ctrl_text(&notice, now);
                Counters::inc(&self.shared.counters.gaps_sent);
            }
        }
        let marks = Marks { snapshot: false, conflated };
        self.frames += u64::from(queue_own(&mut self.scratch, c, enc, &t, ins, marks, now));
        self.mark_dirty(id);
    }

    /// The client drained below half its limit: send what was held back.
    pub(super) fn relieve(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        c.congested = false;
        let slots = std::mem::take(&mut c.slots);
        for &slot in &slots {
            if let Some(s) = self.subs.get(slot, id).filter(|s| s.pending) {
                // A rate cap drops by design (flagged `conflated`); a slow
                // consumer's drops also get a `gap` notice.
                let with_gap = !matches!(s.delivery, Delivery::MaxRate { .. });
                self.deliver_latest(id, slot, with_gap, now);
            }
        }
        if let Some(c) = self.conn(id) {
            c.slots = slots;
        }
    }

    /// Drain channel rings: the message's frame goes to every subscriber as
    /// is. Opaque payloads cannot be conflated: a congested client misses
    /// them and gets a `gap` notice with the missed range once it drains.
    pub(super) fn drain_channels(&mut self, now: u64) -> usize {
        let mut rings = std::mem::take(&mut self.chan_rings);
        let mut n = 0;
        for ring in &mut rings {
            while let Ok(msg) = ring.pop() {
                n += 1;
                let Some(list) = self.chan_subs.get_mut(msg.channel.0 as usize) else { continue };
                for sub in list.iter_mut() {
                    let Some(c) = self.conns.get_mut(sub.conn.0 as usize).and_then(Option::as_mut) else { continue };
                    if c.congested || c.phase != Phase::Open {
                        continue; // missed: the hole shows at the next delivery
                    }
                    if sub.kind == ChanKind::Held {
                        sub.last_seq = sub.last_seq.max(msg.seq);
                        c.held = Some(msg.raw.clone()); // the dialect takes the newest on its schedule
                        continue;
                    }
                    if msg.seq > sub.last_seq + 1 && sub.kind == ChanKind::Native {
                        let name = self.shared.channels.name(msg.channel).unwrap_or_default();
                        let gap = serde_json::json!({"type": "gap", "channel": &*name, "from_seq": sub.last_seq + 1, "to_seq": msg.seq - 1});
                        c.ctrl_text(gap.to_string().as_bytes(), now);
                        Counters::inc(&self.shared.counters.gaps_sent);
                    }
                    sub.last_seq = sub.last_seq.max(msg.seq);
                    match sub.kind {
                        ChanKind::Native => c.data_frame(&msg.frame, now),
                        ChanKind::Enveloped { before, after } => {
                            // Private channels (one user's connections): built per subscriber.
                            use crate::ws::frame;
                            self.scratch.clear();
                            let start = frame::begin(&mut self.scratch);
                            self.scratch.extend_from_slice(before);
                            self.scratch.extend_from_slice(&msg.data);
                            self.scratch.extend_from_slice(after);
                            let r = frame::finish(&mut self.scratch, start, frame::OP_TEXT);
                            c.data_frame(&self.scratch[r], now);
                        }
                        _ => c.data_frame(&msg.raw, now),
                    }
                    self.frames += 1;
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(sub.conn);
                    }
                }
            }
        }
        self.chan_rings = rings;
        n
    }

    /// A ring overran: some ticks never reached this worker. Every
    /// subscription catches up from the last-value cache (`gap` + the
    /// newest value, flagged `conflated`); lossless ones close with 1013.
    pub(super) fn resync(&mut self, now: u64) {
        log::warn!("worker {}: a feed ring overran; resynchronising subscribers from the cache", self.id);
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            let Some(c) = self.conns[i].as_mut().filter(|c| c.phase == Phase::Open) else { continue };
            let slots = std::mem::take(&mut c.slots);
            for &slot in &slots {
                match self.subs.get(slot, id).map(|s| s.delivery) {
                    Some(Delivery::Lossless) => {
                        let reason = "ticks were lost in a ring overrun (lossless subscription)";
                        self.close_conn(id, CloseReason { code: close::TRY_AGAIN_LATER, reason });
                        break;
                    }
                    Some(_) => self.deliver_latest(id, slot, true, now),
                    None => {}
                }
            }
            if let Some(c) = self.conn(id) {
                c.slots = slots;
            }
        }
        // Connections that see every instrument have no per-slot state:
        // their next batch carries every instrument's newest value.
        for &id in &self.all_instruments {
            if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
                for slot in 0..self.shared.registry.len() {
                    c.batch.mark(Slot(slot as u32));
                }
            }
        }
    }
}

/// The slow-consumer policy applies to `c` from now on: data is held back
/// (conflated) until it drains. Counted; logged once per connection.
fn congest(c: &mut Conn, counters: &Counters) {
    c.congested = true;
    Counters::inc(&counters.slow_conflations);
    if c.logged & conn::logged::SLOW == 0 {
        c.logged |= conn::logged::SLOW;
        log::warn!(
            "client {} passed its out-buffer limit ({} bytes queued): slow-consumer policy applies",
            c.client_id,
            c.data_pending()
        );
    }
}

/// A frame for one client alone (a snapshot, a conflated value): `t` in
/// `enc` with `marks`, encoded into `scratch` and queued on `c`'s data
/// lane; a batched encoding marks the slot for the next batch instead.
/// True if a frame was queued (an encoding may have nothing for `t`).
pub(super) fn queue_own(
    scratch: &mut Vec<u8>,
    c: &mut Conn,
    enc: Encoding,
    t: &Tick,
    ins: &Instrument,
    marks: Marks,
    now: u64,
) -> bool {
    if enc.format == encode::Format::Batched {
        c.batch.mark(Slot(t.slot));
        return false;
    }
    scratch.clear();
    let r = encode::encode(scratch, enc, t, ins, marks);
    if r.is_empty() {
        return false;
    }
    c.data(enc.format, &scratch[r], now);
    true
}
