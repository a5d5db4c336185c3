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

use super::{clip, Dialect, Host};
use crate::encode::dialects::campus_key;
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
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
pub struct State {
    /// Times of the last `MAX_CHANGES` subscription changes (a ring).
    changes: [u64; MAX_CHANGES],
    next_change: usize,
    /// Last message from the client, ns (idle timeout).
    last_rx_ns: u64,
}

/// `{"type":"status","status":…,"message":…}`.
fn status(status: &str, message: &str) -> Vec<u8> {
    json!({"type": "status", "status": status, "message": message}).to_string().into_bytes()
}

/// Upgrade and say whether live data is flowing.
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<State, String> {
    host.accept(req, Dialect::Campus)?;
    host.reply(&market_status(host.market_open(), now), now);
    Ok(State { last_rx_ns: now, ..State::default() })
}

/// Handle one request.
pub(crate) fn handle(st: &mut State, host: &mut dyn Host, payload: &mut [u8], now: u64) {
    st.last_rx_ns = now;
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(host, &msg, now),
    };
    if v.as_object().is_none() {
        return reply_error(host, "a request must be a JSON object with an `action`", now);
    }
    let action = match v.get("action").map(|a| a.as_str()) {
        None => return reply_error(host, "missing field `action` (subscribe or unsubscribe)", now),
        Some(None) => return reply_error(host, "field `action` must be a string", now),
        Some(Some(a)) => a,
    };
    let subscribe = match action {
        "subscribe" => true,
        "unsubscribe" => false,
        "ping" => {
            host.reply(br#"{"type":"pong"}"#, now);
            return;
        }
        other => {
            let msg = format!("unknown action `{}` (expected subscribe or unsubscribe)", clip(other));
            return reply_error(host, &msg, now);
        }
    };
    let keys: Vec<String> = match v.get("instruments").map(|i| i.as_array()) {
        None => return reply_error(host, "missing field `instruments` (keys like \"NSE_EQ|INE002A01018\")", now),
        Some(None) => return reply_error(host, "field `instruments` must be an array of instrument keys", now),
        Some(Some(arr)) => match arr.iter().map(|k| k.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>() {
            Some(keys) => keys,
            None => return reply_error(host, "field `instruments` must be an array of strings", now),
        },
    };
    if !take_change(st, now) {
        let msg = format!("rate limit: at most {MAX_CHANGES} subscription changes per minute");
        reply_error(host, &msg, now);
        host.close(close::POLICY, "subscription changes over the limit (10 per minute)");
        return;
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for key in &keys {
        let Some(slot) = resolve(host, key) else {
            failed.push(json!({"instrument_key": clip(key), "reason": "unknown instrument key"}));
            continue;
        };
        let canonical = canonical_key(host, slot);
        if subscribe {
            let known = host.subscription(slot).is_some();
            if !known && host.slots().len() >= MAX_SUBSCRIPTIONS {
                let reason = format!("subscription limit reached ({MAX_SUBSCRIPTIONS} per user)");
                failed.push(json!({"instrument_key": canonical, "reason": reason}));
                continue;
            }
            let delivery = host.default_delivery();
            match host.subscribe(slot, ENC, delivery, now) {
                Ok(()) => done.push(json!(canonical)),
                Err(why) => failed.push(json!({"instrument_key": canonical, "reason": why})),
            }
        } else if host.unsubscribe(slot) {
            done.push(json!(canonical));
        } else {
            failed.push(json!({"instrument_key": canonical, "reason": "not subscribed"}));
        }
    }
    let total = host.slots().len();
    if !failed.is_empty() {
        host.bad_request(&format!("{} of {} instrument keys failed", failed.len(), keys.len()));
    }
    let reply =
        json!({"type": "subscription", "action": action, "instruments": done, "failed": failed, "total": total});
    host.reply(reply.to_string().as_bytes(), now);
}

/// Count a subscription change; false past `MAX_CHANGES` in the window.
fn take_change(st: &mut State, now: u64) -> bool {
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
fn resolve(host: &dyn Host, key: &str) -> Option<Slot> {
    let (segment, id) = key.split_once('|')?;
    let (exchange, kind) = segment.split_once('_')?;
    let reg = host.registry();
    let slot = match kind.to_ascii_uppercase().as_str() {
        "EQ" if id.len() == 12 => reg.slot_of_symbol(id)?,
        "INDEX" => reg.slot_of_symbol(&format!("{exchange}:{id}"))?,
        _ => return None,
    };
    reg.get(slot).exchange.eq_ignore_ascii_case(exchange).then_some(slot)
}

fn canonical_key(host: &dyn Host, slot: Slot) -> Value {
    let mut out = Vec::new();
    campus_key(&mut out, host.registry().get(slot));
    json!(String::from_utf8_lossy(&out))
}

/// `{"type":"error","message":…}`; the connection stays.
pub(crate) fn reply_error(host: &mut dyn Host, msg: &str, now: u64) {
    host.bad_request(msg);
    let reply = json!({"type": "error", "message": msg});
    host.reply(reply.to_string().as_bytes(), now);
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
pub(crate) fn housekeeping(st: &mut State, host: &mut dyn Host, now: u64) {
    let timeout = crate::tick::ns(host.config().campus_idle_timeout);
    if now.saturating_sub(st.last_rx_ns) >= timeout {
        host.reply(&status("disconnected", "Connection closed after an idle timeout"), now);
        host.close(close::NORMAL, "idle timeout");
    }
}
