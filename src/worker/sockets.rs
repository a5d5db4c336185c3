//! A worker's sockets: accepting (and refusing at the connection limit),
//! reading into a connection's input, writing its lanes with one `writev`
//! per dirty connection per turn, closing and dropping (which saves the
//! session and releases every subscription).

use std::io::{self, Read};
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest as Ready, Token};

use super::conn::{Conn, Phase};
use super::{CloseReason, Worker, READ_BUDGET};
use crate::dialect::Dialect;
use crate::metrics::Counters;
use crate::subs::ConnId;
use crate::ws::{close, handshake};

impl Worker {
    /// Accept what is waiting on the main port (`None`: the dialect is
    /// decided per path at the upgrade) or dialect port `port` (its dialect).
    pub(super) fn accept(&mut self, now: u64, port: Option<usize>) {
        let bit = 1u8 << port.map_or(0, |i| i + 1);
        loop {
            let (listener, dialect) = match port {
                Some(i) => (&self.ports[i].1, self.ports[i].0),
                None => (&self.listener, Dialect::Native),
            };
            match listener.accept() {
                Ok((sock, _)) => self.admit(sock, now, dialect, port.is_some()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.accept_stalled & bit != 0 {
                        self.accept_stalled &= !bit;
                        log::info!("worker {}: accepting connections again", self.id);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the rest wait in the backlog, and
                    // no new event will say so; retried as fds free up.
                    if self.accept_stalled & bit == 0 {
                        self.accept_stalled |= bit;
                        Counters::inc(&self.shared.counters.accept_failures);
                        log::warn!(
                            "worker {}: accept failed ({e}); connections wait in the backlog until descriptors free up",
                            self.id
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Accept again on every listener whose accept failed.
    pub(super) fn retry_accepts(&mut self, now: u64) {
        if self.accept_stalled & 1 != 0 {
            self.accept(now, None);
        }
        for i in 0..self.ports.len() {
            if self.accept_stalled & (1 << (i + 1)) != 0 {
                self.accept(now, Some(i));
            }
        }
    }

    /// Take a new connection from the main port or (`own_port`) its
    /// dialect's port, starting TLS when that listener has it.
    pub(super) fn admit(&mut self, mut sock: TcpStream, now: u64, dialect: Dialect, own_port: bool) {
        let c = &self.shared.counters;
        let max = self.shared.config.max_connections as u64;
        let acceptor = self.shared.tls.acceptor(own_port.then_some(dialect));
        if self.shared.open_connections.fetch_add(1, Ordering::Relaxed) >= max {
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            Counters::inc(&c.connections_rejected);
            if acceptor.is_none() {
                let body = format!("connection limit reached ({max}); try again later\n");
                // Best effort: the socket is fresh, so a short response fits its buffer.
                let _ = io::Write::write(&mut sock, &handshake::http_response(503, "text/plain", body.as_bytes()));
            }
            return;
        }
        let tls = match acceptor.map(|a| a.session()) {
            None => None,
            Some(Ok(s)) => Some(Box::new(s)),
            Some(Err(e)) => {
                log::warn!("worker {}: cannot start TLS: {e}", self.id);
                self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        Counters::inc(&c.connections_total);
        let _ = sock.set_nodelay(true);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        if let Err(e) = self.poll.registry().register(&mut sock, Token(id as usize), Ready::READABLE | Ready::WRITABLE)
        {
            log::warn!("worker {}: register failed: {e}", self.id);
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            self.free.push(id);
            return;
        }
        self.next_gen += 1;
        let mut c = Conn::new(sock, now, self.next_gen);
        c.dialect = dialect;
        c.tls = tls;
        self.conns[id as usize] = Some(c);
        self.open += 1;
    }

    #[inline]
    pub(super) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Drop a connection now: unsubscribe everything, save its session.
    pub(super) fn drop_conn(&mut self, id: ConnId) {
        let Some(mut c) = self.conns.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        self.fd_freed = true;
        if c.upgraded {
            self.shared.dialect_connections[c.dialect as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(u) = &c.user {
            u.disconnect();
            u.unsubscribed(c.slots.len() + c.channels.len());
        }
        let mut saved = Vec::with_capacity(c.slots.len());
        for &slot in &c.slots {
            if let Some(s) = self.subs.get(slot, id) {
                if let Some(d) = &self.shared.hub.demand {
                    d.remove(slot, s.enc.mode);
                }
                let token = self.shared.registry.get(slot).token;
                saved.push(crate::session::SavedSub { token, mode: s.enc.mode, delivery: s.delivery });
            }
            if self.subs.unsubscribe(slot, id) == Some(true) && self.all_instruments.is_empty() {
                self.shared.hub.interest.clear(slot, self.id);
            }
        }
        self.leave_all_instruments(id);
        for &ch in &c.channels {
            self.remove_channel_sub(id, ch);
        }
        if c.resumable {
            self.shared.sessions.save(&c.session_key(), saved, std::time::Instant::now());
        }
        self.subs.forget_conn(id);
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.free.push(id.0);
        self.open -= 1;
        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queue a close frame (or drop outright before the upgrade) and count why.
    pub(super) fn close_conn(&mut self, id: ConnId, why: CloseReason) {
        let counters = &self.shared.counters;
        match why.code {
            close::PROTOCOL | close::INVALID_DATA => Counters::inc(&counters.protocol_errors),
            close::TOO_BIG => Counters::inc(&counters.oversized),
            close::POLICY => Counters::inc(&counters.policy_closes),
            close::TRY_AGAIN_LATER => Counters::inc(&counters.slow_disconnects),
            _ => {}
        }
        let Some(c) = self.conn(id) else { return };
        if c.phase == Phase::Open {
            log::info!("closing client {} with {}: {}", c.client_id, why.code, why.reason);
            c.close(why.code, why.reason);
            self.mark_dirty(id);
        } else {
            self.drop_conn(id);
        }
    }

    pub(super) fn on_readable(&mut self, id: ConnId, now: u64) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else {
                return;
            };
            match c.sock.read(&mut self.rbuf) {
                Ok(0) => {
                    if c.tls.as_ref().is_some_and(|t| !t.established()) {
                        self.tls_failed(id, &crate::tls::Failure::Closed);
                    } else {
                        self.peer_closed(id);
                    }
                    return;
                }
                Ok(n) => {
                    if let Some(tls) = &mut c.tls {
                        let before = c.inbuf.len();
                        match tls.receive(&self.rbuf[..n], &mut c.inbuf) {
                            Ok(got) => {
                                if got.established {
                                    self.shared.tls.stats.handshake(tls.version());
                                }
                                let unsent = tls.unsent().len();
                                if unsent > self.shared.config.out_buffer_bytes {
                                    // Only a peer that makes us answer
                                    // (key updates) faster than it reads.
                                    let f =
                                        crate::tls::Failure::Protocol("TLS replies the client does not read".into());
                                    self.tls_failed(id, &f);
                                    return;
                                }
                                if unsent > 0 {
                                    self.mark_dirty(id);
                                }
                                if got.peer_closed {
                                    self.process_input(id, now);
                                    self.peer_closed(id);
                                    return;
                                }
                            }
                            Err(f) => {
                                self.tls_failed(id, &f);
                                return;
                            }
                        }
                        let c = self.conns[id.0 as usize].as_mut().expect("present above");
                        if c.phase == Phase::Closing {
                            c.inbuf.truncate(before);
                        }
                    } else if c.phase != Phase::Closing {
                        c.inbuf.extend_from_slice(&self.rbuf[..n]);
                    }
                    self.process_input(id, now);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.reread.push(id);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
    }

    /// The peer closed (or half-closed): nothing more will come. An HTTP
    /// answer still being rendered by the `http` thread is written when it
    /// arrives (`write` drops the connection once it is out, or on a write
    /// error); queued replies get one try first.
    fn peer_closed(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else { return };
        if c.awaiting_http {
            return;
        }
        let _ = c.flush(&mut self.written);
        self.drop_conn(id);
    }

    /// Drop a connection whose TLS failed, counted by reason and logged at
    /// most once a minute per reason.
    pub(super) fn tls_failed(&mut self, id: ConnId, f: &crate::tls::Failure) {
        let stats = &self.shared.tls.stats;
        stats.failure(f.reason());
        if stats.log_due(f.reason()) {
            log::info!("TLS connection dropped: {f} (logged once a minute per reason; counts in /status)");
        }
        self.drop_conn(id);
    }

    pub(super) fn on_writable(&mut self, id: ConnId, now: u64) {
        if self.conn(id).is_some_and(|c| !c.is_drained()) {
            self.write(id, now);
        }
    }

    /// Flush one connection; handle completion, relief and death.
    pub(super) fn write(&mut self, id: ConnId, now: u64) {
        let Some(c) = self.conns.get_mut(id.0 as usize).and_then(Option::as_mut) else { return };
        let res = c.flush(&mut self.written);
        match res {
            Ok(true) => {
                let c = self.conn(id).expect("present above");
                if c.phase == Phase::Closing && !c.awaiting_http {
                    // TLS ends with close_notify, given one chance to go.
                    if let Some(tls) = c.tls.as_mut() {
                        if tls.close_notify() {
                            let _ = io::Write::write(&mut c.sock, tls.unsent());
                        }
                    }
                    self.drop_conn(id);
                } else if c.congested {
                    self.relieve(id, now);
                }
            }
            Ok(false) => {
                let limit = self.shared.config.out_buffer_bytes;
                if self.conn(id).is_some_and(|c| c.congested && c.data_pending() <= limit / 2) {
                    self.relieve(id, now);
                }
            }
            Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<crate::tls::Failure>()) {
                Some(f) => self.tls_failed(id, f),
                None => self.drop_conn(id),
            },
        }
    }

    pub(super) fn flush_dirty(&mut self, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(c) = self.conn(id) {
                c.dirty = false;
                self.write(id, now);
            }
        }
        dirty.clear();
        // Relief may have queued more: keep those for the next turn.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}
