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

use super::{clip, ChanKind, Host};
use crate::encode::{Encoding, Format, Marks};
use crate::instrument::{Registry, Slot};
use crate::shared::SERVER_NAME;
use crate::subs::Delivery;
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
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<(), String> {
    let format = match req.param("format") {
        None => Format::Json,
        Some(f) => Format::parse(&f).ok_or_else(|| format!("format `{f}`: expected json or rkyv"))?,
    };
    let client_id = super::client_id(req)?;
    host.accept(req, super::Dialect::Native)?;
    host.set_format(format);
    host.set_client_id(client_id.clone());
    let welcome = json!({"type": "welcome", "client_id": client_id, "server": SERVER_NAME, "format": format.name(), "market_open": host.market_open()});
    send(host, &welcome, now);

    if let Some(saved) = host.restore() {
        let mut subscribed = Vec::new();
        for s in saved {
            let Some(slot) = host.registry().slot_of_token(s.token) else {
                continue;
            };
            if host.subscribe(slot, Encoding { format, mode: s.mode }, s.delivery, now).is_ok() {
                subscribed.push(entry(host.registry(), slot, Some(s.mode)));
            }
        }
        let total = total(host);
        let reply = json!({"type": "subscription_response", "status": "success",
            "data": {"action": "restore", "subscribed": subscribed, "rejected": [], "total_subscribed": total}});
        send(host, &reply, now);
    }

    if let Some(tokens) = req.param("tokens") {
        let mut body = format!("{{\"action\":\"subscribe\",\"tokens\":[{tokens}]");
        if let Some(mode) = req.param("mode") {
            body.push_str(&format!(",\"mode\":{}", Value::String(mode)));
        }
        body.push('}');
        let mut bytes = body.into_bytes();
        handle(host, &mut bytes, now);
    }
    Ok(())
}

/// Handle one text message.
pub(crate) fn handle(host: &mut dyn Host, payload: &mut [u8], now: u64) {
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(msg) => return reply_error(host, None, "bad_request", &msg, now),
    };
    let req_id = v.get("id").map(|i| owned(i));
    let result = match v.as_object() {
        None => Err(bad("a request must be a JSON object with an `action`")),
        Some(_) => dispatch(host, &v, req_id.clone(), now),
    };
    if let Err(Refusal(code, msg)) = result {
        reply_error(host, req_id, code, &msg, now);
    }
}

fn dispatch(host: &mut dyn Host, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let action = match v.get("action") {
        None => return Err(bad(format!("missing field `action` (one of {ACTIONS})"))),
        Some(a) => a.as_str().ok_or_else(|| bad("field `action` must be a string"))?,
    };
    match action {
        "subscribe" => subscribe(host, v, req_id, now),
        "unsubscribe" => unsubscribe(host, v, req_id, now),
        "get_subscriptions" => {
            let list: Vec<Value> = host
                .slots()
                .iter()
                .filter_map(|&slot| {
                    let (enc, delivery) = host.subscription(slot)?;
                    let mut e = entry(host.registry(), slot, Some(enc.mode));
                    e["delivery"] = json!(delivery.name());
                    if let Delivery::MaxRate { interval_ns } = delivery {
                        let rate = 1e9 / interval_ns.max(1) as f64;
                        e["max_rate"] =
                            if (rate - rate.round()).abs() < 1e-6 { json!(rate.round() as u64) } else { json!(rate) };
                    }
                    Some(e)
                })
                .collect();
            let channels = conn_channels(host);
            let list: Vec<Value> = list.into_iter().chain(channels).collect();
            let total = list.len();
            let reply = with_id(
                json!({"type": "subscription_response", "status": "success",
                "data": {"action": "get_subscriptions", "subscriptions": list, "total_subscribed": total}}),
                req_id,
            );
            send(host, &reply, now);
            Ok(())
        }
        "snapshot" => snapshot(host, v, req_id, now),
        "ping" => {
            let reply = with_id(json!({"type": "pong", "ts": now}), req_id);
            send(host, &reply, now);
            Ok(())
        }
        other => Err(Refusal("unknown_action", format!("unknown action `{}` (expected one of {ACTIONS})", clip(other)))),
    }
}

/// `{"channel": name}` for each channel `id` is subscribed to.
fn conn_channels(host: &dyn Host) -> Vec<Value> {
    host.channel_ids().iter().filter_map(|&ch| host.channels().name(ch)).map(|n| json!({"channel": &*n})).collect()
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
fn targets(host: &dyn Host, v: &BorrowedValue) -> Result<Vec<Target>, Refusal> {
    let mut out = resolve(host.registry(), v)?;
    super::first_of_each(&mut out, |t| match t {
        Target::Found(slot) => Some(*slot),
        Target::Unknown(_) => None,
    });
    let limit = host.config().max_subscriptions.max(1000);
    if out.len() > limit {
        return Err(Refusal("limit_exceeded", format!("{} targets in one request; at most {limit}", out.len())));
    }
    Ok(out)
}

fn resolve(reg: &Registry, v: &BorrowedValue) -> Result<Vec<Target>, Refusal> {
    let mut out = Vec::new();
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
                        json!({"symbol": clip(s), "reason": "unknown symbol"}),
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

fn subscribe(host: &mut dyn Host, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let mode = mode_of(v, Mode::Ltp)?;
    let delivery = delivery_of(v, host.default_delivery())?;
    let targets = targets(host, v)?;
    let format = host.format();
    let (mut subscribed, mut rejected) = (Vec::new(), Vec::new());
    for t in targets {
        match t {
            Target::Found(slot) => match host.subscribe(slot, Encoding { format, mode }, delivery, now) {
                Ok(()) => subscribed.push(entry(host.registry(), slot, Some(mode))),
                Err(why) => {
                    let mut e = entry(host.registry(), slot, None);
                    e["reason"] = json!(format!("{why} ({} per connection)", host.config().max_subscriptions));
                    rejected.push(e);
                }
            },
            Target::Unknown(e) => rejected.push(e),
        }
    }
    for name in channel_names(v)? {
        // Channels count toward the per-connection limit (a client creating
        // names by subscribing must not fill the channel table alone).
        match host.join_channel(name, ChanKind::Native) {
            Ok(_) => subscribed.push(json!({"channel": name})),
            Err(reason) => rejected.push(json!({"channel": clip(name), "reason": reason})),
        }
    }
    respond(host, "subscribe", "subscribed", subscribed, rejected, req_id, now);
    Ok(())
}

fn unsubscribe(host: &mut dyn Host, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let targets = targets(host, v)?;
    let (mut done, mut rejected) = (Vec::new(), Vec::new());
    for t in targets {
        match t {
            Target::Found(slot) if host.unsubscribe(slot) => done.push(entry(host.registry(), slot, None)),
            Target::Found(slot) => {
                let mut e = entry(host.registry(), slot, None);
                e["reason"] = json!("not subscribed");
                rejected.push(e);
            }
            Target::Unknown(e) => rejected.push(e),
        }
    }
    for name in channel_names(v)? {
        match host.channels().lookup(name) {
            Some(ch) if host.leave_channel(ch) => done.push(json!({"channel": name})),
            _ => rejected.push(json!({"channel": clip(name), "reason": "not subscribed"})),
        }
    }
    respond(host, "unsubscribe", "unsubscribed", done, rejected, req_id, now);
    Ok(())
}

/// `{"type":"snapshot","status":"success","data":[market_data…],"rejected":[…]}`:
/// the objects written by the JSON encoder itself, not parsed back.
fn snapshot(host: &mut dyn Host, v: &BorrowedValue, req_id: Option<Value>, now: u64) -> Result<(), Refusal> {
    let mode = mode_of(v, Mode::Quote)?;
    let targets = targets(host, v)?;
    let mut rejected = Vec::new();
    let mut out = b"{\"type\":\"snapshot\",\"status\":\"success\",\"data\":[".to_vec();
    let mut first = true;
    for t in targets {
        match t {
            Target::Found(slot) => match host.last_value(slot) {
                Some(tick) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let ins = host.registry().get(slot);
                    let marks = Marks { snapshot: true, conflated: false };
                    crate::encode::json::market_data_object(
                        &mut out,
                        mode,
                        &tick,
                        (&ins.symbol, &ins.exchange, ins.price_decimals),
                        marks,
                    );
                }
                None => {
                    let mut e = entry(host.registry(), slot, None);
                    e["reason"] = json!("no data yet");
                    rejected.push(e);
                }
            },
            Target::Unknown(e) => rejected.push(e),
        }
    }
    out.extend_from_slice(b"],\"rejected\":");
    out.extend_from_slice(Value::Array(rejected).to_string().as_bytes());
    if let Some(id) = req_id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.to_string().as_bytes());
    }
    out.push(b'}');
    host.reply(&out, now);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn respond(
    host: &mut dyn Host,
    action: &str,
    key: &str,
    ok: Vec<Value>,
    rejected: Vec<Value>,
    req_id: Option<Value>,
    now: u64,
) {
    let status = if ok.is_empty() && !rejected.is_empty() { "error" } else { "success" };
    let total = total(host);
    let mut data = Map::new();
    data.insert("action".into(), json!(action));
    data.insert(key.into(), Value::Array(ok));
    data.insert("rejected".into(), Value::Array(rejected));
    data.insert("total_subscribed".into(), json!(total));
    let reply = with_id(json!({"type": "subscription_response", "status": status, "data": data}), req_id);
    send(host, &reply, now);
}

fn total(host: &dyn Host) -> usize {
    host.slots().len() + host.channel_ids().len()
}

/// `{"token","symbol","exchange"[,"mode"]}` for a slot.
fn entry(reg: &Registry, slot: Slot, mode: Option<Mode>) -> Value {
    let ins = reg.get(slot);
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

fn send(host: &mut dyn Host, v: &Value, now: u64) {
    host.reply(v.to_string().as_bytes(), now);
}

/// Send an `error` frame; the connection stays open.
pub(crate) fn reply_error(host: &mut dyn Host, req_id: Option<Value>, code: &str, message: &str, now: u64) {
    host.bad_request(&format!("{code}: {message}"));
    let reply = with_id(json!({"type": "error", "code": code, "message": message}), req_id);
    send(host, &reply, now);
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
pub(crate) fn housekeeping(host: &mut dyn Host, now: u64) {
    let hb_ns = crate::tick::ns(host.config().heartbeat);
    if host.idle_ns(now) >= hb_ns && host.drained() {
        host.heartbeat(now);
    }
}

/// The heartbeat every idle client gets: feed health as (name, state, age
/// of the newest tick in ms).
pub fn heartbeat<'a>(feeds: impl Iterator<Item = (&'a str, &'a str, Option<u64>)>, market_open: bool, now: u64) -> Vec<u8> {
    let feeds: Vec<Value> = feeds
        .map(|(name, state, age)| json!({"name": name, "state": state, "last_tick_age_ms": age}))
        .collect();
    json!({"type": "heartbeat", "ts": now, "market_open": market_open, "feeds": feeds}).to_string().into_bytes()
}

/// `{"type":"market_status","market_open":..,"ts":..}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    json!({"type": "market_status", "market_open": open, "ts": now}).to_string().into_bytes()
}
