//! The native protocol (`GET /stream`): the welcome, client requests parsed
//! with simd-json, and their replies. Replies go on the control lane.
//!
//! ```json
//! {"action":"subscribe","tokens":[2885,11536],"mode":"quote","id":7}
//! {"type":"subscription_response","id":7,"status":"success","data":{"action":"subscribe","subscribed":[{"token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":"quote"}],"rejected":[{"token":99999999,"reason":"unknown token"}],"total_subscribed":1}}
//! {"type":"error","id":7,"code":"bad_request","message":"field `tokens` must be an array of integers"}
//! ```

use serde_json::{json, Map, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::super::{ChanKind, Worker};
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::metrics::Counters;
use crate::shared::{Shared, SERVER_NAME};
use crate::subs::{ConnId, Delivery};
use crate::tick::Mode;
use crate::ws::handshake::Request;

/// Slowest `max_rate` (one update per 100 s) and fastest accepted.
const MIN_RATE: f64 = 0.01;
const MAX_RATE: f64 = 1_000_000.0;

/// The actions a client may send, for error messages.
const ACTIONS: &str = "subscribe, unsubscribe, get_subscriptions, snapshot, ping";

/// A request refused as a whole: `error` frame with this code and message.
struct Refusal(&'static str, String);

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal("bad_request", msg.into())
}

/// Accept the upgrade: 101, welcome, restored session, query subscription.
///
/// # Errors
/// A bad query parameter; the caller answers 400 with the message.
pub(crate) fn open(w: &mut Worker, id: ConnId, req: &Request, now: u64) -> Result<(), String> {
    let format = match req.param("format") {
        None => Format::Json,
        Some(f) => Format::parse(&f).ok_or_else(|| format!("format `{f}`: expected json or rkyv"))?,
    };
    let client_id = super::client_id(req)?;
    let market_open = w.shared.market_open.load(std::sync::atomic::Ordering::Relaxed);
    w.accept_upgrade(id, req, super::Dialect::Native);
    let c = w.conn(id).expect("caller holds the connection");
    c.format = format;
    c.client_id = client_id.clone();
    let welcome = json!({"type": "welcome", "client_id": client_id, "server": SERVER_NAME, "format": format.name(), "market_open": market_open});
    c.ctrl_text(welcome.to_string().as_bytes(), now);

    let key = c.session_key();
    if let Some(saved) = w.shared.sessions.take(&key, std::time::Instant::now()) {
        Counters::inc(&w.shared.counters.sessions_restored);
        let mut subscribed = Vec::new();
        for s in saved {
            let Some(slot) = w.shared.registry.slot_of_token(s.token) else {
                continue;
            };
            if w.subscribe(id, slot, Encoding { format, mode: s.mode }, s.delivery, now).is_ok() {
                subscribed.push(entry(w, slot, Some(s.mode)));
            }
        }
        let total = total(w, id);
        let reply = json!({"type": "subscription_response", "status": "success",
            "data": {"action": "restore", "subscribed": subscribed, "rejected": [], "total_subscribed": total}});
        send(w, id, &reply, now);
    }

    if let Some(tokens) = req.param("tokens") {
        let mut body = format!("{{\"action\":\"subscribe\",\"tokens\":[{tokens}]");
        if let Some(mode) = req.param("mode") {
            body.push_str(&format!(",\"mode\":{}", Value::String(mode)));
        }
        body.push('}');
        let mut bytes = body.into_bytes();
        handle(w, id, &mut bytes, now);
    }
    Ok(())
}

/// Handle one text message.
pub(crate) fn handle(w: &mut Worker, id: ConnId, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(w, id, None, "bad_request", &msg, now),
    };
    let req_id = v.get("id").map(|i| owned(i));
    let result = match v.as_object() {
        None => Err(bad("a request must be a JSON object with an `action`")),
        Some(_) => dispatch(w, id, &v, req_id.clone(), now),
    };
    if let Err(Refusal(code, msg)) = result {
        reply_error(w, id, req_id, code, &msg, now);
    }
}

fn dispatch(w: &mut Worker, id: ConnId, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let action = match v.get("action") {
        None => return Err(bad(format!("missing field `action` (one of {ACTIONS})"))),
        Some(a) => a.as_str().ok_or_else(|| bad("field `action` must be a string"))?,
    };
    match action {
        "subscribe" => subscribe(w, id, v, req_id, now),
        "unsubscribe" => unsubscribe(w, id, v, req_id, now),
        "get_subscriptions" => {
            let conn = w.conn(id).expect("live connection");
            let slots = conn.slots.clone();
            let list: Vec<Value> = slots
                .iter()
                .filter_map(|&slot| {
                    let s = w.subs.get(slot, id)?;
                    let mut e = entry(w, slot, Some(s.enc.mode));
                    e["delivery"] = json!(s.delivery.name());
                    if let Delivery::MaxRate { interval_ns } = s.delivery {
                        let rate = 1e9 / interval_ns.max(1) as f64;
                        e["max_rate"] =
                            if (rate - rate.round()).abs() < 1e-6 { json!(rate.round() as u64) } else { json!(rate) };
                    }
                    Some(e)
                })
                .collect();
            let channels = conn_channels(w, id);
            let list: Vec<Value> = list.into_iter().chain(channels).collect();
            let total = list.len();
            let reply = with_id(
                json!({"type": "subscription_response", "status": "success",
                "data": {"action": "get_subscriptions", "subscriptions": list, "total_subscribed": total}}),
                req_id,
            );
            send(w, id, &reply, now);
            Ok(())
        }
        "snapshot" => snapshot(w, id, v, req_id, now),
        "ping" => {
            let reply = with_id(json!({"type": "pong", "ts": now}), req_id);
            send(w, id, &reply, now);
            Ok(())
        }
        other => Err(Refusal(
            "unknown_action",
            format!("unknown action `{}` (expected one of {ACTIONS})", other.chars().take(64).collect::<String>()),
        )),
    }
}

/// `{"channel": name}` for each channel `id` is subscribed to.
fn conn_channels(w: &mut Worker, id: ConnId) -> Vec<Value> {
    let chans = w.conn(id).map(|c| c.channels.clone()).unwrap_or_default();
    chans.into_iter().filter_map(|ch| w.shared.channels.name(ch)).map(|n| json!({"channel": &*n})).collect()
}

/// A target named by a request: a resolved slot or why not.
enum Target {
    Found(Slot),
    Unknown(Value),
}

/// Resolve `tokens` (integers, O(1)) and `symbols`/`stocks` (one hash lookup each).
/// Resolve a request's targets; duplicates are folded and the count is
/// capped at `max(max_subscriptions, 1000)`, so one request cannot stall a
/// worker or amplify into a huge reply (entries past the per-connection
/// limit are still rejected one by one, with a reason).
fn targets(w: &mut Worker, v: &BorrowedValue) -> Result<Vec<Target>, Refusal> {
    let mut out = resolve(w, v)?;
    // Fold duplicates with a scratch bitset by slot: no hashing.
    let seen = &mut w.seen;
    out.retain(|t| match t {
        Target::Found(slot) => {
            let (word, bit) = (slot.idx() / 64, 1u64 << (slot.idx() % 64));
            let first = seen[word] & bit == 0;
            seen[word] |= bit;
            first
        }
        Target::Unknown(_) => true,
    });
    for t in &out {
        if let Target::Found(slot) = t {
            seen[slot.idx() / 64] = 0;
        }
    }
    let limit = w.shared.config.max_subscriptions.max(1000);
    if out.len() > limit {
        return Err(Refusal("limit_exceeded", format!("{} targets in one request; at most {limit}", out.len())));
    }
    Ok(out)
}

fn resolve(w: &Worker, v: &BorrowedValue) -> Result<Vec<Target>, Refusal> {
    let mut out = Vec::new();
    let reg = &w.shared.registry;
    let mut any = false;
    if let Some(tokens) = v.get("tokens") {
        any = true;
        let arr = tokens.as_array().ok_or_else(|| bad("field `tokens` must be an array of integers"))?;
        for t in arr {
            let n = match (t.as_u64(), t.as_i64()) {
                (Some(n), _) => u32::try_from(n).ok().and_then(|n| reg.slot_of_token(n)).ok_or(json!(n)),
                (None, Some(neg)) => Err(json!(neg)),
                _ => return Err(bad("field `tokens` must be an array of integers")),
            };
            match n {
                Ok(slot) => out.push(Target::Found(slot)),
                Err(token) => out.push(Target::Unknown(json!({"token": token, "reason": "unknown token"}))),
            }
        }
    }
    for key in ["symbols", "stocks"] {
        if let Some(syms) = v.get(key) {
            any = true;
            let arr = syms.as_array().ok_or_else(|| bad(format!("field `{key}` must be an array of strings")))?;
            for s in arr {
                let s = s.as_str().ok_or_else(|| bad(format!("field `{key}` must be an array of strings")))?;
                match reg.slot_of_symbol(s) {
                    Some(slot) => out.push(Target::Found(slot)),
                    None => out.push(Target::Unknown(
                        json!({"symbol": s.chars().take(64).collect::<String>(), "reason": "unknown symbol"}),
                    )),
                }
            }
        }
    }
    if !any && v.get("channels").is_none() {
        return Err(bad("the request needs `tokens` (integers), `symbols` (strings) or `channels` (names)"));
    }
    Ok(out)
}

/// The `channels` of a request, as names (validated by the caller).
fn channel_names<'v>(v: &'v BorrowedValue) -> Result<Vec<&'v str>, Refusal> {
    let Some(list) = v.get("channels") else { return Ok(Vec::new()) };
    let arr = list.as_array().ok_or_else(|| bad("field `channels` must be an array of strings"))?;
    arr.iter().map(|c| c.as_str().ok_or_else(|| bad("field `channels` must be an array of strings"))).collect()
}

fn mode_of(v: &BorrowedValue, default: Mode) -> Result<Mode, Refusal> {
    match v.get("mode") {
        None => Ok(default),
        Some(m) => m
            .as_str()
            .and_then(Mode::parse)
            .or_else(|| match m.as_u64() {
                Some(1) => Some(Mode::Ltp),
                Some(2) => Some(Mode::Quote),
                Some(3) => Some(Mode::Depth),
                _ => None,
            })
            .ok_or_else(|| bad("field `mode` must be one of \"ltp\", \"quote\", \"depth\" (or 1, 2, 3)")),
    }
}

fn delivery_of(v: &BorrowedValue, default: Delivery) -> Result<Delivery, Refusal> {
    if let Some(r) = v.get("max_rate") {
        let n = r.cast_f64().filter(|n| (MIN_RATE..=MAX_RATE).contains(n)).ok_or_else(|| {
            bad(format!("field `max_rate` must be a number of updates per second from {MIN_RATE} to {MAX_RATE}"))
        })?;
        return Ok(Delivery::MaxRate { interval_ns: (1e9 / n).max(1.0) as u64 });
    }
    match v.get("delivery") {
        None => Ok(default),
        Some(d) => match d.as_str() {
            Some("conflate") => Ok(Delivery::Conflate),
            Some("lossless") => Ok(Delivery::Lossless),
            Some("max_rate") => Err(bad("delivery `max_rate` needs a `max_rate` field (updates per second)")),
            _ => Err(bad("field `delivery` must be \"conflate\", \"lossless\" or \"max_rate\"")),
        },
    }
}

fn subscribe(w: &mut Worker, id: ConnId, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let mode = mode_of(v, Mode::Ltp)?;
    let delivery = delivery_of(v, w.default_delivery)?;
    let targets = targets(w, v)?;
    let format = w.conn(id).expect("live connection").format;
    let (mut subscribed, mut rejected) = (Vec::new(), Vec::new());
    for t in targets {
        match t {
            Target::Found(slot) => match w.subscribe(id, slot, Encoding { format, mode }, delivery, now) {
                Ok(()) => subscribed.push(entry(w, slot, Some(mode))),
                Err(why) => {
                    let mut e = entry(w, slot, None);
                    e["reason"] = json!(format!("{why} ({} per connection)", w.shared.config.max_subscriptions));
                    rejected.push(e);
                }
            },
            Target::Unknown(e) => rejected.push(e),
        }
    }
    for name in channel_names(v)? {
        // Channels count toward the per-connection limit (a client creating
        // names by subscribing must not fill the channel table alone).
        match w.join_channel(id, name, ChanKind::Native) {
            Ok(_) => subscribed.push(json!({"channel": name})),
            Err(reason) => {
                rejected.push(json!({"channel": name.chars().take(64).collect::<String>(), "reason": reason}))
            }
        }
    }
    respond(w, id, "subscribe", "subscribed", subscribed, rejected, req_id, now);
    Ok(())
}

fn unsubscribe(w: &mut Worker, id: ConnId, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let targets = targets(w, v)?;
    let (mut done, mut rejected) = (Vec::new(), Vec::new());
    for t in targets {
        match t {
            Target::Found(slot) if w.unsubscribe(id, slot) => done.push(entry(w, slot, None)),
            Target::Found(slot) => {
                let mut e = entry(w, slot, None);
                e["reason"] = json!("not subscribed");
                rejected.push(e);
            }
            Target::Unknown(e) => rejected.push(e),
        }
    }
    for name in channel_names(v)? {
        match w.shared.channels.lookup(name) {
            Some(ch) if w.unsubscribe_channel(id, ch) => done.push(json!({"channel": name})),
            _ => {
                rejected.push(json!({"channel": name.chars().take(64).collect::<String>(), "reason": "not subscribed"}))
            }
        }
    }
    respond(w, id, "unsubscribe", "unsubscribed", done, rejected, req_id, now);
    Ok(())
}

fn snapshot(w: &mut Worker, id: ConnId, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let mode = mode_of(v, Mode::Quote)?;
    let targets = targets(w, v)?;
    let (mut data, mut rejected) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    for t in targets {
        match t {
            Target::Found(slot) => match w.shared.hub.lvc.load(slot) {
                Some(tick) => {
                    buf.clear();
                    let enc = Encoding { format: Format::Json, mode };
                    let r = crate::encode::encode(
                        &mut buf,
                        enc,
                        &tick,
                        w.shared.registry.get(slot),
                        crate::encode::Marks { snapshot: true, conflated: false },
                    );
                    let frame = &buf[r];
                    let skip = if frame[1] & 0x7f == 126 { 4 } else { 2 };
                    data.push(serde_json::from_slice::<Value>(&frame[skip..]).expect("encoder writes valid JSON"));
                }
                None => {
                    let mut e = entry(w, slot, None);
                    e["reason"] = json!("no data yet");
                    rejected.push(e);
                }
            },
            Target::Unknown(e) => rejected.push(e),
        }
    }
    let reply = with_id(json!({"type": "snapshot", "status": "success", "data": data, "rejected": rejected}), req_id);
    send(w, id, &reply, now);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn respond(
    w: &mut Worker,
    id: ConnId,
    action: &str,
    key: &str,
    ok: Vec<Value>,
    rejected: Vec<Value>,
    req_id: Option<Value>,
    now: u64,
) {
    let status = if ok.is_empty() && !rejected.is_empty() { "error" } else { "success" };
    let total = total(w, id);
    let mut data = Map::new();
    data.insert("action".into(), json!(action));
    data.insert(key.into(), Value::Array(ok));
    data.insert("rejected".into(), Value::Array(rejected));
    data.insert("total_subscribed".into(), json!(total));
    let reply = with_id(json!({"type": "subscription_response", "status": status, "data": data}), req_id);
    send(w, id, &reply, now);
}

fn total(w: &mut Worker, id: ConnId) -> usize {
    w.conn(id).map_or(0, |c| c.slots.len() + c.channels.len())
}

/// `{"token","symbol","exchange"[,"mode"]}` for a slot.
fn entry(w: &Worker, slot: Slot, mode: Option<Mode>) -> Value {
    let ins = w.shared.registry.get(slot);
    let mut e = json!({"token": ins.token, "symbol": &*ins.symbol, "exchange": &*ins.exchange});
    if let Some(m) = mode {
        e["mode"] = json!(m.name());
    }
    e
}

fn with_id(mut v: Value, req_id: Option<Value>) -> Value {
    if let Some(i) = req_id {
        v["id"] = i;
    }
    v
}

/// A simd-json value as a serde_json one (for echoing `id`).
fn owned(v: &BorrowedValue) -> Value {
    serde_json::from_str(&simd_json::to_string(v).unwrap_or_default()).unwrap_or(Value::Null)
}

fn send(w: &mut Worker, id: ConnId, v: &Value, now: u64) {
    let text = v.to_string();
    if let Some(c) = w.conn(id) {
        c.ctrl_text(text.as_bytes(), now);
    }
    w.mark_dirty(id);
}

/// Send an `error` frame; the connection stays open.
pub(crate) fn reply_error(w: &mut Worker, id: ConnId, req_id: Option<Value>, code: &str, message: &str, now: u64) {
    Counters::inc(&w.shared.counters.bad_requests);
    if let Some(c) = w.conn(id) {
        if c.logged & crate::worker::conn::logged::BAD_REQUEST == 0 {
            c.logged |= crate::worker::conn::logged::BAD_REQUEST;
            log::info!("client {}: {code}: {message}", c.client_id);
        }
    }
    let reply = with_id(json!({"type": "error", "code": code, "message": message}), req_id);
    send(w, id, &reply, now);
}

/// `{"type":"gap","token":..,"from_seq":..,"to_seq":..}` into `out`.
pub(crate) fn write_gap(out: &mut Vec<u8>, token: u32, from: u64, to: u64) {
    out.clear();
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b"{\"type\":\"gap\",\"token\":");
    out.extend_from_slice(b.format(token).as_bytes());
    out.extend_from_slice(b",\"from_seq\":");
    out.extend_from_slice(b.format(from).as_bytes());
    out.extend_from_slice(b",\"to_seq\":");
    out.extend_from_slice(b.format(to).as_bytes());
    out.push(b'}');
}

/// Idle connections get a heartbeat with feed health every `--heartbeat-ms`.
pub(crate) fn housekeeping(w: &mut Worker, id: ConnId, now: u64) {
    let hb_ns = crate::tick::ns(w.shared.config.heartbeat);
    if w.conn(id).is_some_and(|c| now.saturating_sub(c.last_tx_ns) >= hb_ns && c.is_drained()) {
        w.send_heartbeat(id, now);
    }
}

/// The heartbeat every idle client gets, with feed health.
pub(crate) fn heartbeat(shared: &Shared, now: u64) -> Vec<u8> {
    let feeds: Vec<Value> = shared
        .feeds
        .iter()
        .map(|f| json!({"name": f.name, "state": f.state_name(now), "last_tick_age_ms": f.last_tick_age_ms(now)}))
        .collect();
    let market_open = shared.market_open.load(std::sync::atomic::Ordering::Relaxed);
    json!({"type": "heartbeat", "ts": now, "market_open": market_open, "feeds": feeds}).to_string().into_bytes()
}

/// `{"type":"market_status","market_open":..,"ts":..}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    json!({"type": "market_status", "market_open": open, "ts": now}).to_string().into_bytes()
}
