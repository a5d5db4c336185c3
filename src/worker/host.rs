//! The worker as a dialect's [`Host`]: one connection's view of the
//! server. Every call maps onto the worker's own connection, subscription
//! and channel code; a dialect reaches nothing else.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::{logged, Phase};
use super::fanout::queue_own;
use super::{CloseReason, Worker};
use crate::auth::User;
use crate::channel::{ChannelId, Channels};
use crate::config::Config;
use crate::dialect::{ChanKind, Count, Dialect, Host};
use crate::encode::{Encoding, Format, Marks};
use crate::instrument::{Registry, Slot};
use crate::metrics::Counters;
use crate::session::SavedSub;
use crate::subs::{ConnId, Delivery};
use crate::tick::Tick;
use crate::ws::frame;
use crate::ws::handshake::{self, Request};

/// One connection of a worker, as its dialect sees the server.
pub(super) struct Ctx<'w> {
    /// The worker.
    pub w: &'w mut Worker,
    /// The connection (present while the dialect runs).
    pub id: ConnId,
}

impl Ctx<'_> {
    fn conn(&self) -> &super::conn::Conn {
        self.w.conns[self.id.0 as usize].as_ref().expect("a dialect runs on a live connection")
    }

    fn conn_mut(&mut self) -> &mut super::conn::Conn {
        self.w.conns[self.id.0 as usize].as_mut().expect("a dialect runs on a live connection")
    }
}

impl Host for Ctx<'_> {
    fn registry(&self) -> &Registry {
        &self.w.shared.registry
    }

    fn config(&self) -> &Config {
        &self.w.shared.config
    }

    fn channels(&self) -> &Channels {
        &self.w.shared.channels
    }

    fn last_value(&self, slot: Slot) -> Option<Tick> {
        self.w.shared.hub.lvc.load(slot)
    }

    fn market_open(&self) -> bool {
        self.w.shared.market_open.load(Ordering::Relaxed)
    }

    fn default_delivery(&self) -> Delivery {
        self.w.default_delivery
    }

    fn has_channel_source(&self) -> bool {
        self.w.shared.feeds.iter().any(|f| matches!(f.kind, "redis" | "publish"))
    }

    fn open_connections(&self, dialect: Dialect) -> u64 {
        self.w.shared.dialect_connections[dialect as usize].load(Ordering::Relaxed)
    }

    fn client_id(&self) -> &str {
        &self.conn().client_id
    }

    fn set_client_id(&mut self, id: String, resumable: bool) {
        let c = self.conn_mut();
        (c.client_id, c.resumable) = (id, resumable);
    }

    fn format(&self) -> Format {
        self.conn().format
    }

    fn set_format(&mut self, format: Format) {
        self.conn_mut().format = format;
    }

    fn slots(&self) -> &[Slot] {
        &self.conn().slots
    }

    fn subscription(&self, slot: Slot) -> Option<(Encoding, Delivery)> {
        self.w.subs.get(slot, self.id).map(|s| (s.enc, s.delivery))
    }

    fn channel_ids(&self) -> &[ChannelId] {
        &self.conn().channels
    }

    fn user(&self) -> Option<&Arc<User>> {
        self.conn().user.as_ref()
    }

    fn idle_ns(&self, now: u64) -> u64 {
        now.saturating_sub(self.conn().last_tx_ns)
    }

    fn drained(&self) -> bool {
        self.conn().is_drained()
    }

    fn congested(&self) -> bool {
        self.conn().congested
    }

    fn last_pong_ns(&self) -> u64 {
        self.conn().last_pong_ns
    }

    fn is_open(&self) -> bool {
        self.conn().phase == Phase::Open
    }

    fn accept(&mut self, req: &Request, dialect: Dialect) -> Result<(), String> {
        let shared = &self.w.shared;
        let open = &shared.dialect_connections[dialect as usize];
        match dialect.connection_cap(&shared.config) {
            // Workers admit in parallel: the place is taken atomically.
            Some(max) => {
                let max = max as u64;
                if open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_err() {
                    Counters::inc(&shared.counters.limit_rejections);
                    return Err(dialect.refusal_at_cap(max as usize).trim_end().to_string());
                }
            }
            None => {
                open.fetch_add(1, Ordering::Relaxed);
            }
        }
        let key = req.ws_key.as_deref().expect("upgrade_error checked the key");
        let c = self.conn_mut();
        c.ctrl_raw(handshake::accept_response(key).as_bytes());
        c.phase = Phase::Open;
        c.dialect = dialect;
        c.upgraded = true;
        self.w.mark_dirty(self.id);
        Ok(())
    }

    fn reply(&mut self, text: &[u8], now: u64) {
        self.conn_mut().ctrl_text(text, now);
        self.w.mark_dirty(self.id);
    }

    fn ping(&mut self, payload: &[u8], now: u64) {
        let c = self.conn_mut();
        c.ctrl_frame(frame::OP_PING, payload);
        c.last_tx_ns = now;
        self.w.mark_dirty(self.id);
    }

    fn data_frame(&mut self, frame: &[u8], now: u64) {
        let id = self.id;
        let w = &mut *self.w;
        let c = w.conns[id.0 as usize].as_mut().expect("a dialect runs on a live connection");
        if c.phase != Phase::Open {
            return; // never data after a close frame
        }
        c.data_frame(frame, now);
        w.frames += 1;
        w.check_congestion(id);
        w.mark_dirty(id);
    }

    fn snapshot(&mut self, slot: Slot, enc: Encoding, now: u64) {
        let (id, w) = (self.id, &mut *self.w);
        let Some(t) = w.shared.hub.lvc.load(slot) else { return };
        let c = w.conns[id.0 as usize].as_mut().expect("a dialect runs on a live connection");
        if c.phase != Phase::Open || c.congested {
            return;
        }
        let marks = Marks { snapshot: true, conflated: false };
        if queue_own(&mut w.scratch, c, enc, &t, w.shared.registry.get(slot), marks, now) {
            w.frames += 1;
            w.check_congestion(id);
        }
        w.mark_dirty(id);
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.w.close_conn(self.id, CloseReason { code, reason });
    }

    fn subscribe(&mut self, slot: Slot, enc: Encoding, delivery: Delivery, now: u64) -> Result<(), &'static str> {
        self.w.subscribe(self.id, slot, enc, delivery, now)
    }

    fn unsubscribe(&mut self, slot: Slot) -> bool {
        self.w.unsubscribe(self.id, slot)
    }

    fn watch_all(&mut self) -> bool {
        if !self.w.join_all_instruments(self.id) {
            return false;
        }
        // The next batch carries every instrument's newest value.
        let shared = self.w.shared.clone();
        let batch = &mut self.conn_mut().batch;
        for (slot, _) in shared.registry.iter() {
            if shared.hub.lvc.load(slot).is_some() {
                batch.mark(slot);
            }
        }
        true
    }

    fn unwatch_all(&mut self) -> bool {
        self.w.leave_all_instruments(self.id)
    }

    fn take_changed(&mut self, out: &mut Vec<Slot>) {
        self.conn_mut().batch.take(out);
    }

    fn join_channel(&mut self, name: &str, kind: ChanKind) -> Result<bool, String> {
        self.w.join_channel(self.id, name, kind)
    }

    fn leave_channel(&mut self, ch: ChannelId) -> bool {
        self.w.unsubscribe_channel(self.id, ch)
    }

    fn take_held(&mut self) -> Option<Arc<[u8]>> {
        self.conn_mut().held.take()
    }

    fn restore(&mut self) -> Option<Vec<SavedSub>> {
        let key = self.conn().session_key();
        let saved = self.w.shared.sessions.take(&key, std::time::Instant::now())?;
        Counters::inc(&self.w.shared.counters.sessions_restored);
        Some(saved)
    }

    fn authenticate(&mut self, key: &str) -> Result<(), (u16, String)> {
        self.w.authenticate(self.id, Some(key))
    }

    fn same_user(&self, key: &str) -> Option<bool> {
        let me = self.conn().user.as_ref().map(|u| u.id.clone());
        let u = self.w.shared.auth.check(Some(key), crate::auth::role::SUBSCRIBE).ok()?;
        Some(Some(&u.id) == me.as_ref())
    }

    fn bad_request(&mut self, what: &str) {
        Counters::inc(&self.w.shared.counters.bad_requests);
        let c = self.conn_mut();
        if c.logged & logged::BAD_REQUEST == 0 {
            c.logged |= logged::BAD_REQUEST;
            log::info!("{} client {}: {what}", c.dialect.name(), c.client_id);
        }
    }

    fn count(&mut self, what: Count) {
        let c = &self.w.shared.counters;
        Counters::inc(match what {
            Count::AuthFailure => &c.auth_failures,
            Count::ConnectionRejected => &c.connections_rejected,
        });
    }

    fn heartbeat(&mut self, now: u64) {
        self.w.send_heartbeat(self.id, now);
    }
}
