//! What happens on a schedule rather than on input: rate-capped
//! subscriptions' trailing values, market open/close notices, and the
//! housekeeping pass (handshake and close timeouts, each dialect's
//! heartbeats, pings and batches).

use std::cmp::Reverse;

use super::conn::Phase;
use super::host::Ctx;
use super::{Worker, HANDSHAKE_TIMEOUT_NS};
use crate::dialect::{self, native, Dialect};
use crate::instrument::Slot;
use crate::metrics::Counters;
use crate::subs::ConnId;

impl Worker {
    pub(super) fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((due, conn, slot))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let (id, slot) = (ConnId(conn), Slot(slot));
            // `next_ok_ns == due` identifies the subscription that scheduled
            // this timer: a stale entry (unsubscribed, or a reused ConnId)
            // does not match and is ignored.
            let ready = self.subs.get(slot, id).is_some_and(|s| s.pending && s.next_ok_ns == due)
                && self.conn(id).is_some_and(|c| !c.congested && c.phase == Phase::Open);
            if ready {
                self.deliver_latest(id, slot, false, now);
            }
        }
    }

    /// Tell every client the market opened or closed.
    pub(super) fn announce_market(&mut self, now: u64) {
        self.market_open = !self.market_open;
        let status = Dialect::ALL.map(|d| dialect::market_status(d, self.market_open, now));
        for i in 0..self.conns.len() {
            if let Some(c) = self.conns[i].as_mut().filter(|c| c.phase == Phase::Open) {
                let s = &status[c.dialect as usize];
                if !s.is_empty() {
                    c.ctrl_text(s, now);
                    self.mark_dirty(ConnId(i as u32));
                }
            }
        }
    }

    pub(super) fn housekeeping(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let id = ConnId(i as u32);
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            match c.phase {
                Phase::Handshake if now.saturating_sub(c.opened_ns) > HANDSHAKE_TIMEOUT_NS => {
                    Counters::inc(&self.shared.counters.handshake_failures);
                    if c.tls.as_ref().is_some_and(|t| !t.established()) {
                        self.shared.tls.stats.failure(crate::tls::Reason::Timeout);
                    }
                    self.drop_conn(id);
                }
                Phase::Open => {
                    let mut proto = std::mem::take(&mut c.proto);
                    proto.housekeeping(&mut Ctx { w: self, id }, now);
                    if let Some(c) = self.conn(id) {
                        c.proto = proto;
                    }
                }
                Phase::Closing if now.saturating_sub(c.last_tx_ns) > HANDSHAKE_TIMEOUT_NS => {
                    // A peer that never reads its close frame.
                    self.drop_conn(id);
                }
                _ => {}
            }
        }
    }

    /// Queue the native heartbeat for `id`; it is built once per
    /// housekeeping pass and the same bytes go to every idle client.
    pub(super) fn send_heartbeat(&mut self, id: ConnId, now: u64) {
        if self.heartbeat.as_ref().is_none_or(|(t, _)| *t != now) {
            let judge = self.shared.judge(now);
            let feeds =
                self.shared.feeds.iter().map(|f| (f.name.as_str(), f.state_name(&judge), f.last_tick_age_ms(now)));
            self.heartbeat = Some((now, native::heartbeat(feeds, judge.market_open, now)));
        }
        let hb = &self.heartbeat.as_ref().expect("set above").1;
        if let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) {
            c.ctrl_text(hb, now);
        }
        self.mark_dirty(id);
    }
}
