//! A connection's input: the HTTP request (plain HTTP goes to the `http`
//! thread; an upgrade picks the dialect, authenticates and opens its
//! [`Protocol`]), then WebSocket messages, reassembled by
//! `ws::message` and handed to the dialect.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use super::conn::Phase;
use super::host::Ctx;
use super::{CloseReason, Worker};
use crate::dialect::{Dialect, Protocol};
use crate::metrics::Counters;
use crate::subs::ConnId;
use crate::ws::{close, frame, handshake, message};

impl Worker {
    pub(super) fn process_input(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        match c.phase {
            Phase::Handshake => self.on_handshake(id, now),
            Phase::Open => self.on_frames(id, now),
            Phase::Closing => c.inbuf.clear(),
        }
    }

    pub(super) fn http_reply(&mut self, id: ConnId, status: u16, ctype: &str, body: &[u8]) {
        if let Some(c) = self.conn(id) {
            c.ctrl_raw(&handshake::http_response(status, ctype, body));
            c.phase = Phase::Closing;
        }
        self.mark_dirty(id);
    }

    pub(super) fn on_handshake(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conn(id) else { return };
        let (req, n) = match handshake::parse(&c.inbuf) {
            handshake::Head::Partial => return,
            handshake::Head::Invalid(status, why) => {
                Counters::inc(&self.shared.counters.handshake_failures);
                self.http_reply(id, status, "text/plain", format!("{why}\n").as_bytes());
                return;
            }
            handshake::Head::Complete(req, n) => (req, n),
        };
        c.inbuf.drain(..n);
        if !req.upgrade_attempt() {
            // Answered by the `http` thread, off this loop; read nothing more.
            c.phase = Phase::Closing;
            c.awaiting_http = true;
            let conn = (id, c.gen);
            let job = crate::http::Job { worker: self.id, conn, req };
            if self.http_jobs.send(job).is_err() {
                self.drop_conn(id); // shutting down
            }
            return;
        }
        if let Some((status, why)) = req.upgrade_error() {
            Counters::inc(&self.shared.counters.handshake_failures);
            self.http_reply(id, status, "text/plain", format!("{why}\n").as_bytes());
            return;
        }
        let dialect = match (c.dialect, Dialect::for_path(&req.path)) {
            (port, _) if port != Dialect::Native => port, // a dialect's own port
            (_, Some(d)) if d.disabled(&self.shared.config).is_some() => {
                Counters::inc(&self.shared.counters.handshake_failures);
                let body = d.disabled(&self.shared.config).unwrap_or_default();
                self.http_reply(id, 404, "text/plain", body.as_bytes());
                return;
            }
            (_, Some(d))
                if d.connection_cap(&self.shared.config).is_some_and(|max| {
                    self.shared.dialect_connections[d as usize].load(Ordering::Acquire) >= max as u64
                }) =>
            {
                Counters::inc(&self.shared.counters.limit_rejections);
                let max = d.connection_cap(&self.shared.config).unwrap_or(0);
                self.http_reply(id, 503, "text/plain", d.refusal_at_cap(max).as_bytes());
                return;
            }
            (_, Some(d)) => d,
            (_, None) => {
                Counters::inc(&self.shared.counters.handshake_failures);
                let body = format!(
                    "no WebSocket endpoint at {}; endpoints: /stream (native), /enhanced-stream and /live-stream (Odin), /ws (Trading WS), /api/ws/prices (Campus), / (exchange streams)\n",
                    req.path.chars().take(128).collect::<String>()
                );
                self.http_reply(id, 404, "text/plain", body.as_bytes());
                return;
            }
        };
        // The key: `api_key=` or `Authorization: Bearer`. OpenAlgo clients
        // may instead authenticate with their first message.
        let key = req.param("api_key").or_else(|| req.bearer.clone());
        if !dialect.authenticates_itself(key.is_some()) {
            if let Err((status, why)) = self.authenticate(id, key.as_deref()) {
                self.http_reply(id, status, "text/plain", why.as_bytes());
                return;
            }
        }
        match Protocol::open(&mut Ctx { w: self, id }, &req, dialect, now) {
            Ok(proto) => {
                if let Some(c) = self.conn(id) {
                    c.proto = proto;
                }
            }
            Err((status, why)) => {
                if status != 403 {
                    Counters::inc(&self.shared.counters.handshake_failures); // 403s are auth failures
                }
                let body = if why.ends_with('\n') { why } else { format!("{why}\n") };
                self.http_reply(id, status, "text/plain", body.as_bytes());
                return;
            }
        }
        self.mark_dirty(id);
        if self.conn(id).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_frames(id, now);
        }
    }

    pub(super) fn on_frames(&mut self, id: ConnId, now: u64) {
        let max = self.shared.config.max_message_bytes;
        let Some(c) = self.conn(id) else { return };
        let mut buf = std::mem::take(&mut c.inbuf);
        let mut rx = std::mem::take(&mut c.rx);
        let (used, res) = rx.feed(&mut buf, max, |ev| self.on_event(id, ev, now));
        if let Err(why) = res {
            self.close_conn(id, why);
        }
        buf.drain(..used);
        if let Some(c) = self.conn(id).filter(|c| c.phase == Phase::Open) {
            c.inbuf = buf;
            c.rx = rx;
        }
    }

    /// One event of a connection's frames; stops the walk once the
    /// connection is no longer open.
    pub(super) fn on_event(&mut self, id: ConnId, ev: message::Event<'_>, now: u64) -> ControlFlow<()> {
        let Some(c) = self.conn(id) else { return ControlFlow::Break(()) };
        match ev {
            message::Event::Ping(payload) => {
                c.ctrl_frame(frame::OP_PONG, payload);
                self.mark_dirty(id);
            }
            message::Event::Pong => c.last_pong_ns = now,
            message::Event::Close { code } => {
                c.close(code, "");
                self.mark_dirty(id);
            }
            message::Event::Message { binary, payload } => {
                let mut proto = std::mem::take(&mut c.proto);
                if binary {
                    proto.binary(&mut Ctx { w: self, id }, now);
                } else {
                    proto.text(&mut Ctx { w: self, id }, payload, now);
                }
                if let Some(c) = self.conn(id) {
                    c.proto = proto;
                }
            }
        }
        let limit = self.shared.config.out_buffer_bytes;
        if self.conn(id).is_some_and(|c| c.ctrl_pending() > limit) {
            let reason = "replies are not being read: control lane over the out-buffer limit";
            self.close_conn(id, CloseReason { code: close::POLICY, reason });
        }
        if self.conn(id).is_none_or(|c| c.phase != Phase::Open) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Check an API key for the subscribe role and take one of its user's
    /// connection slots; on refusal, the HTTP status and body to answer.
    /// Counted; the body never says which part of the key was wrong.
    pub(super) fn authenticate(&mut self, id: ConnId, key: Option<&str>) -> Result<(), (u16, String)> {
        use crate::auth::{role, Refused};
        let user = match self.shared.auth.check(key, role::SUBSCRIBE) {
            Ok(u) => u,
            Err(r) => {
                Counters::inc(&self.shared.counters.auth_failures);
                let why = match r {
                    Refused::Missing => "an API key is required: `api_key=` or `Authorization: Bearer <key>`\n",
                    Refused::Invalid => "invalid API key\n",
                    Refused::Forbidden => "this API key may not subscribe\n",
                };
                log::info!("refused a connection: {}", why.trim_end());
                return Err((401, why.into()));
            }
        };
        if !user.try_connect() {
            Counters::inc(&self.shared.counters.limit_rejections);
            let max = user.max_connections.unwrap_or(0);
            return Err((429, format!("user {} is at its connection limit ({max})\n", user.id)));
        }
        if let Some(c) = self.conn(id) {
            c.user = Some(user);
        } else {
            user.disconnect();
        }
        Ok(())
    }
}
