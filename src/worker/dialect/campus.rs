//! Campus prices (seed `002_…`): `/api/ws/prices`, Upstox-style instrument
//! keys (`NSE_EQ|<ISIN>`, `NSE_INDEX|<SYMBOL>`) resolved through the master.
//!
//! ```json
//! {"action":"subscribe","instruments":["NSE_EQ|INE002A01018"]}
//! {"type":"price_update","instrument_key":"NSE_EQ|INE002A01018","data":{"last_price":2451.5,"timestamp":"…","change_percent":0.03,"volume":15000}}
//! {"type":"status","status":"connected","message":"Live market data connected"}
//! ```
//! The seed's limits hold: at most 100 subscriptions per connection (a
//! user's total over connections is its auth-file `max-subscriptions`), at
//! most 10 subscription changes per minute (the 11th is refused with an
//! error and the connection closed with 1008, a policy breach), and a
//! connection that sends nothing for an hour (`--campus-idle-timeout-secs`)
//! is closed with 1000.

use serde_json::{json, Value};
use simd_json::prelude::*;

use super::super::{CloseReason, Worker};
use super::{Dialect, Ext};
use crate::encode::dialects::campus_key;
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::metrics::Counters;
use crate::subs::ConnId;
use crate::tick::Mode;
use crate::ws::close;
use crate::ws::handshake::Request;

const ENC: Encoding = Encoding { format: Format::Campus, mode: Mode::Quote };

/// Most subscriptions per connection (the seed's per-user limit).
const MAX_SUBSCRIPTIONS: usize = 100;
/// Most subscription changes per window.
const MAX_CHANGES: usize = 10;
/// The change-rate window.
const CHANGE_WINDOW_NS: u64 = 60_000_000_000;

/// Campus per-connection state.
#[derive(Default)]
pub(crate) struct State {
    /// Times of the last `MAX_CHANGES` subscription changes (a ring).
    changes: [u64; MAX_CHANGES],
    next_change: usize,
    /// Last message from the client, ns (idle timeout).
    last_rx_ns: u64,
}

fn state(w: &mut Worker, id: ConnId) -> Option<&mut State> {
    match &mut w.conn(id)?.ext {
        Ext::Campus(st) => Some(st),
        _ => None,
    }
}

/// `{"type":"status","status":…,"message":…}`.
fn status(status: &str, message: &str) -> Vec<u8> {
    json!({"type": "status", "status": status, "message": message}).to_string().into_bytes()
}

/// Upgrade and say whether live data is flowing.
pub(crate) fn open(w: &mut Worker, id: ConnId, req: &Request, now: u64) -> Result<(), String> {
    let market_open = w.shared.market_open.load(std::sync::atomic::Ordering::Relaxed);
    w.accept_upgrade(id, req, Dialect::Campus);
    let c = w.conn(id).expect("caller holds the connection");
    c.ext = Ext::Campus(Box::new(State { last_rx_ns: now, ..State::default() }));
    w.reply(id, &market_status(market_open, now), now);
    Ok(())
}

/// Handle one request.
pub(crate) fn handle(w: &mut Worker, id: ConnId, payload: &mut [u8], now: u64) {
    if let Some(st) = state(w, id) {
        st.last_rx_ns = now;
    }
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(w, id, &msg, now),
    };
    if v.as_object().is_none() {
        return reply_error(w, id, "a request must be a JSON object with an `action`", now);
    }
    let action = match v.get("action").map(|a| a.as_str()) {
        None => return reply_error(w, id, "missing field `action` (subscribe or unsubscribe)", now),
        Some(None) => return reply_error(w, id, "field `action` must be a string", now),
        Some(Some(a)) => a,
    };
    let subscribe = match action {
        "subscribe" => true,
        "unsubscribe" => false,
        "ping" => {
            w.reply(id, br#"{"type":"pong"}"#, now);
            return;
        }
        other => {
            let msg = format!(
                "unknown action `{}` (expected subscribe or unsubscribe)",
                other.chars().take(64).collect::<String>()
            );
            return reply_error(w, id, &msg, now);
        }
    };
    let keys: Vec<String> = match v.get("instruments").map(|i| i.as_array()) {
        None => return reply_error(w, id, "missing field `instruments` (keys like \"NSE_EQ|INE002A01018\")", now),
        Some(None) => return reply_error(w, id, "field `instruments` must be an array of instrument keys", now),
        Some(Some(arr)) => match arr.iter().map(|k| k.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>() {
            Some(keys) => keys,
            None => return reply_error(w, id, "field `instruments` must be an array of strings", now),
        },
    };
    if !take_change(w, id, now) {
        let msg = format!("rate limit: at most {MAX_CHANGES} subscription changes per minute");
        reply_error(w, id, &msg, now);
        let reason = "subscription changes over the limit (10 per minute)";
        w.close_conn(id, CloseReason { code: close::POLICY, reason });
        return;
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for key in &keys {
        let Some(slot) = resolve(w, key) else {
            failed.push(
                json!({"instrument_key": key.chars().take(64).collect::<String>(), "reason": "unknown instrument key"}),
            );
            continue;
        };
        let canonical = canonical_key(w, slot);
        if subscribe {
            let held = w.conn(id).map_or(0, |c| c.slots.len());
            let known = w.subs.contains(slot, id);
            if !known && held >= MAX_SUBSCRIPTIONS {
                let reason = format!("subscription limit reached ({MAX_SUBSCRIPTIONS} per user)");
                failed.push(json!({"instrument_key": canonical, "reason": reason}));
                continue;
            }
            let delivery = w.default_delivery;
            match w.subscribe(id, slot, ENC, delivery, now) {
                Ok(()) => done.push(json!(canonical)),
                Err(why) => failed.push(json!({"instrument_key": canonical, "reason": why})),
            }
        } else if w.unsubscribe(id, slot) {
            done.push(json!(canonical));
        } else {
            failed.push(json!({"instrument_key": canonical, "reason": "not subscribed"}));
        }
    }
    let total = w.conn(id).map_or(0, |c| c.slots.len());
    if !failed.is_empty() {
        Counters::inc(&w.shared.counters.bad_requests);
    }
    let reply =
        json!({"type": "subscription", "action": action, "instruments": done, "failed": failed, "total": total});
    w.reply(id, reply.to_string().as_bytes(), now);
}

/// Count a subscription change; false past `MAX_CHANGES` in the window.
fn take_change(w: &mut Worker, id: ConnId, now: u64) -> bool {
    let Some(st) = state(w, id) else { return false };
    let oldest = st.changes[st.next_change];
    if oldest != 0 && now.saturating_sub(oldest) < CHANGE_WINDOW_NS {
        return false;
    }
    st.changes[st.next_change] = now;
    st.next_change = (st.next_change + 1) % MAX_CHANGES;
    true
}

/// `NSE_EQ|<ISIN>` (or `BSE_EQ|…`) → the instrument with that ISIN on that
/// exchange; `NSE_INDEX|<SYMBOL>` → the index.
fn resolve(w: &Worker, key: &str) -> Option<Slot> {
    let (segment, id) = key.split_once('|')?;
    let (exchange, kind) = segment.split_once('_')?;
    let reg = &w.shared.registry;
    let slot = match kind.to_ascii_uppercase().as_str() {
        "EQ" if id.len() == 12 => reg.slot_of_symbol(id)?,
        "INDEX" => reg.slot_of_symbol(&format!("{exchange}:{id}"))?,
        _ => return None,
    };
    reg.get(slot).exchange.eq_ignore_ascii_case(exchange).then_some(slot)
}

fn canonical_key(w: &Worker, slot: Slot) -> Value {
    let mut out = Vec::new();
    campus_key(&mut out, w.shared.registry.get(slot));
    json!(String::from_utf8_lossy(&out))
}

/// `{"type":"error","message":…}`; the connection stays.
pub(crate) fn reply_error(w: &mut Worker, id: ConnId, msg: &str, now: u64) {
    Counters::inc(&w.shared.counters.bad_requests);
    let reply = json!({"type": "error", "message": msg});
    w.reply(id, reply.to_string().as_bytes(), now);
}

/// A `status` message on each market transition.
pub(crate) fn market_status(open: bool, _now: u64) -> Vec<u8> {
    if open {
        status("connected", "Live market data connected")
    } else {
        status("market_closed", "Market closed: prices resume at the next open")
    }
}

/// Close a connection idle past the timeout.
pub(crate) fn housekeeping(w: &mut Worker, id: ConnId, now: u64) {
    let timeout = crate::tick::ns(w.shared.config.campus_idle_timeout);
    let idle = state(w, id).is_some_and(|st| now.saturating_sub(st.last_rx_ns) >= timeout);
    if idle {
        w.reply(id, &status("disconnected", "Connection closed after an idle timeout"), now);
        w.close_conn(id, CloseReason { code: close::NORMAL, reason: "idle timeout" });
    }
}
