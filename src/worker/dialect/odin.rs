//! Odin streamer (seed `000_…`): `/enhanced-stream?client_id=` (persistent,
//! dynamic subscriptions, the same `client_id` gets its subscriptions back
//! after a reconnect) and `/live-stream?tokens=476,11536` (or `stocks=`):
//! the initial set from the URL.
//!
//! ```json
//! {"type":"request","action":"subscribe","stocks":["RELIANCE","TCS"]}
//! {"type":"subscription_response","status":"success","data":{"action":"subscribe","subscribed_stocks":["RELIANCE","TCS"],"total_subscribed":2}}
//! {"type":"market_data","symbol":"RELIANCE","token":"2885","exchange":"NSE","timestamp":"…","data":{"ltp":2850.5,…}}
//! ```
//! Tokens may be strings (`"476"`, as in the seed) or integers; `stocks`
//! are symbols (`RELIANCE`, `NSE:RELIANCE`) or ISINs. Anything unknown is
//! listed in `failed_stocks` with the reason, the rest is subscribed.

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::super::Worker;
use super::Dialect;
use crate::encode::dialects::iso_string;
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::metrics::Counters;
use crate::subs::ConnId;
use crate::tick::{now_ns, Mode};
use crate::ws::handshake::Request;

/// Odin has no modes: every subscriber gets the full quote.
const ENC: Encoding = Encoding { format: Format::Odin, mode: Mode::Quote };

/// Most targets in one request (bounds the work and the reply).
const MAX_TARGETS: usize = 5000;

const ACTIONS: &str = "subscribe, unsubscribe, get_subscriptions, ping";

fn iso_now() -> String {
    iso_string(now_ns())
}

/// Welcome (exactly the seed's), restored session, URL subscriptions.
pub(crate) fn open(w: &mut Worker, id: ConnId, req: &Request, now: u64) -> Result<(), String> {
    let enhanced = req.path == "/enhanced-stream";
    let client_id = super::client_id(req)?;
    let mut initial = Vec::new();
    for key in ["tokens", "stocks", "symbols"] {
        if let Some(list) = req.param(key) {
            initial.extend(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())));
        }
    }
    let market_open = w.shared.market_open.load(std::sync::atomic::Ordering::Relaxed);
    w.accept_upgrade(id, req, Dialect::Odin);
    let c = w.conn(id).expect("caller holds the connection");
    if enhanced {
        c.client_id = client_id.clone();
    }
    let session = c.session_key();
    let (name, features) = if enhanced {
        (
            "Connected to Odin Streamer Enhanced WebSocket",
            json!(["dynamic_subscriptions", "market_hours_control", "persistent_connection"]),
        )
    } else {
        ("Connected to Odin Streamer Live WebSocket", json!(["live_stream", "market_hours_control"]))
    };
    let welcome = json!({
        "type": "welcome",
        "status": "connected",
        "client_id": client_id,
        "data": {
            "message": name,
            "features": features,
            "market_open": market_open,
            "instructions": {
                "subscribe": "{\"type\": \"request\", \"action\": \"subscribe\", \"stocks\": [\"RELIANCE\", \"TCS\"]}",
                "unsubscribe": "{\"type\": \"request\", \"action\": \"unsubscribe\", \"stocks\": [\"RELIANCE\"]}",
                "ping": "{\"type\": \"request\", \"action\": \"ping\"}"
            }
        }
    });
    w.reply(id, welcome.to_string().as_bytes(), now);

    if enhanced {
        if let Some(saved) = w.shared.sessions.take(&session, std::time::Instant::now()) {
            Counters::inc(&w.shared.counters.sessions_restored);
            let mut restored = Vec::new();
            for s in saved {
                if let Some(slot) = w.shared.registry.slot_of_token(s.token) {
                    if w.subscribe(id, slot, ENC, s.delivery, now).is_ok() {
                        restored.push(json!(&*w.shared.registry.get(slot).symbol));
                    }
                }
            }
            respond(w, id, "restore", "subscribed_stocks", restored, Vec::new(), now);
        }
    }
    if !initial.is_empty() {
        let (ok, failed) = subscribe(w, id, &initial, now);
        respond(w, id, "subscribe", "subscribed_stocks", ok, failed, now);
    }
    Ok(())
}

/// Handle one request.
pub(crate) fn handle(w: &mut Worker, id: ConnId, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(w, id, &msg, now),
    };
    if let Err(msg) = dispatch(w, id, &v, now) {
        reply_error(w, id, &msg, now);
    }
}

fn dispatch(w: &mut Worker, id: ConnId, v: &BorrowedValue, now: u64) -> Result<(), String> {
    if v.as_object().is_none() {
        return Err("a request must be a JSON object like {\"type\": \"request\", \"action\": \"subscribe\", \"stocks\": [\"RELIANCE\"]}".into());
    }
    match v.get("type").map(|t| t.as_str()) {
        None | Some(Some("request")) => {}
        Some(_) => return Err("field `type` must be \"request\"".into()),
    }
    let action = match v.get("action") {
        None => return Err(format!("missing field `action` (one of {ACTIONS})")),
        Some(a) => a.as_str().ok_or("field `action` must be a string")?,
    };
    match action {
        "subscribe" => {
            let (ok, failed) = subscribe(w, id, &targets(v)?, now);
            respond(w, id, "subscribe", "subscribed_stocks", ok, failed, now);
        }
        "unsubscribe" => {
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for t in targets(v)? {
                match resolve(w, &t) {
                    Ok(slot) if w.unsubscribe(id, slot) => done.push(json!(&*w.shared.registry.get(slot).symbol)),
                    Ok(slot) => {
                        failed.push(json!({"stock": &*w.shared.registry.get(slot).symbol, "reason": "not subscribed"}))
                    }
                    Err(e) => failed.push(e),
                }
            }
            respond(w, id, "unsubscribe", "unsubscribed_stocks", done, failed, now);
        }
        "get_subscriptions" => {
            let slots = w.conn(id).map(|c| c.slots.clone()).unwrap_or_default();
            let list = slots.iter().map(|&s| json!(&*w.shared.registry.get(s).symbol)).collect();
            respond(w, id, "get_subscriptions", "subscribed_stocks", list, Vec::new(), now);
        }
        "ping" => {
            let pong = json!({"type": "pong", "status": "success", "timestamp": iso_now()});
            w.reply(id, pong.to_string().as_bytes(), now);
        }
        other => {
            return Err(format!(
                "unknown action `{}` (expected one of {ACTIONS})",
                other.chars().take(64).collect::<String>()
            ))
        }
    }
    Ok(())
}

/// The `stocks` / `symbols` / `tokens` of a request, as JSON values.
fn targets(v: &BorrowedValue) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut any = false;
    for key in ["stocks", "symbols", "tokens"] {
        let Some(list) = v.get(key) else { continue };
        any = true;
        let arr = list.as_array().ok_or_else(|| format!("field `{key}` must be an array"))?;
        for item in arr {
            match (item.as_str(), item.as_u64()) {
                (Some(s), _) => out.push(json!(s)),
                (None, Some(n)) if key == "tokens" => out.push(json!(n)),
                _ if key == "tokens" => return Err("field `tokens` must hold token numbers or strings".into()),
                _ => return Err(format!("field `{key}` must be an array of strings")),
            }
        }
    }
    if !any {
        return Err("the request needs `stocks` (symbols) or `tokens`".into());
    }
    if out.len() > MAX_TARGETS {
        return Err(format!("{} stocks in one request; at most {MAX_TARGETS}", out.len()));
    }
    Ok(out)
}

/// A symbol, ISIN or token (number or numeric string) → slot.
fn resolve(w: &Worker, t: &Value) -> Result<Slot, Value> {
    let reg = &w.shared.registry;
    let found = match t {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).and_then(|n| reg.slot_of_token(n)),
        Value::String(s) => match s.parse::<u32>() {
            Ok(n) => reg.slot_of_token(n),
            Err(_) => reg.slot_of_symbol(s),
        },
        _ => None,
    };
    found.ok_or_else(|| {
        let shown: String = match t {
            Value::String(s) => s.chars().take(64).collect(),
            other => other.to_string(),
        };
        let reason = if matches!(t, Value::Number(_)) || shown.parse::<u32>().is_ok() {
            "unknown token"
        } else {
            "unknown symbol"
        };
        json!({"stock": shown, "reason": reason})
    })
}

fn subscribe(w: &mut Worker, id: ConnId, targets: &[Value], now: u64) -> (Vec<Value>, Vec<Value>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    let delivery = w.default_delivery;
    for t in targets {
        match resolve(w, t) {
            Ok(slot) => {
                let symbol = json!(&*w.shared.registry.get(slot).symbol);
                if ok.contains(&symbol) {
                    continue;
                }
                match w.subscribe(id, slot, ENC, delivery, now) {
                    Ok(()) => ok.push(symbol),
                    Err(why) => failed.push(json!({"stock": symbol, "reason": why})),
                }
            }
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}

fn respond(w: &mut Worker, id: ConnId, action: &str, key: &str, ok: Vec<Value>, failed: Vec<Value>, now: u64) {
    let total = w.conn(id).map_or(0, |c| c.slots.len());
    let status = if ok.is_empty() && !failed.is_empty() { "error" } else { "success" };
    let mut data = serde_json::Map::new();
    data.insert("action".into(), json!(action));
    data.insert(key.into(), Value::Array(ok));
    if !failed.is_empty() {
        Counters::inc(&w.shared.counters.bad_requests);
        data.insert("failed_stocks".into(), Value::Array(failed));
    }
    data.insert("total_subscribed".into(), json!(total));
    let reply = json!({"type": "subscription_response", "status": status, "data": data});
    w.reply(id, reply.to_string().as_bytes(), now);
}

/// `{"type":"error","status":"error","message":…}`; the connection stays.
pub(crate) fn reply_error(w: &mut Worker, id: ConnId, msg: &str, now: u64) {
    Counters::inc(&w.shared.counters.bad_requests);
    let reply = json!({"type": "error", "status": "error", "message": msg, "timestamp": iso_now()});
    w.reply(id, reply.to_string().as_bytes(), now);
}

/// `{"type":"market_status","status":"open"|"closed","data":{"market_open":…,"message":…},"timestamp":…}`.
pub(crate) fn market_status(open: bool, _now: u64) -> Vec<u8> {
    let (status, message) = if open {
        ("open", "Market open: live data resumes for your subscriptions")
    } else {
        ("closed", "Market closed: connection and subscriptions stay until the next open")
    };
    json!({"type": "market_status", "status": status, "data": {"market_open": open, "message": message}, "timestamp": iso_now()})
        .to_string()
        .into_bytes()
}

/// Nothing periodic: Odin clients get data or nothing (WebSocket pings from
/// the client are answered by the worker).
pub(crate) fn housekeeping(_w: &mut Worker, _id: ConnId, _now: u64) {}
