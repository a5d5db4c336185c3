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

use super::{clip, owned, reply_json, ChanKind, Host};
use crate::encode::{Encoding, Format, Marks};
use crate::instrument::{Registry, Slot};
use crate::subs::Delivery;
use crate::tick::Mode;
use crate::ws::handshake::Request;
use crate::SERVER_NAME;

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
    host.set_client_id(client_id.clone(), req.param("client_id").is_some());
    let welcome = json!({"type": "welcome", "client_id": client_id, "server": SERVER_NAME, "format": format.name(), "market_open": host.market_open()});
    reply_json(host, &welcome, now);

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
        reply_json(host, &reply, now);
    }

    if let Some(tokens) = req.param("tokens") {
        // The same as the client sending the subscribe itself (built as JSON
        // values: nothing in the query can add fields to the request).
        let tokens: Vec<Value> = tokens
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<u64>().map_or_else(|_| Value::String(t.into()), Value::from))
            .collect();
        let mut request = json!({"action": "subscribe", "tokens": tokens});
        if let Some(mode) = req.param("mode") {
            request["mode"] = Value::String(mode);
        }
        let mut bytes = request.to_string().into_bytes();
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
            reply_json(host, &reply, now);
            Ok(())
        }
        "snapshot" => snapshot(host, v, req_id, now),
        "ping" => {
            let reply = with_id(json!({"type": "pong", "ts": now}), req_id);
            reply_json(host, &reply, now);
            Ok(())
        }
        other => {
            Err(Refusal("unknown_action", format!("unknown action `{}` (expected one of {ACTIONS})", clip(other))))
        }
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
                    None => out.push(Target::Unknown(json!({"symbol": clip(s), "reason": "unknown symbol"}))),
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
    // Validated before anything changes: a refused request subscribes nothing.
    let names = channel_names(v)?;
    let format = host.format();
    let (mut subscribed, mut rejected) = (Vec::new(), Vec::new());
    for t in targets {
        match t {
            Target::Found(slot) => match host.subscribe(slot, Encoding { format, mode }, delivery, now) {
                Ok(()) => subscribed.push(entry(host.registry(), slot, Some(mode))),
                Err(why) => {
                    let mut e = entry(host.registry(), slot, None);
                    e["reason"] = json!(crate::demand::reason(why, host.config().max_subscriptions));
                    rejected.push(e);
                }
            },
            Target::Unknown(e) => rejected.push(e),
        }
    }
    for name in names {
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
    // Validated before anything changes: a refused request drops nothing.
    let names = channel_names(v)?;
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
    for name in names {
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
    reply_json(host, &reply, now);
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

/// Send an `error` frame; the connection stays open.
pub(crate) fn reply_error(host: &mut dyn Host, req_id: Option<Value>, code: &str, message: &str, now: u64) {
    host.bad_request(&format!("{code}: {message}"));
    let reply = with_id(json!({"type": "error", "code": code, "message": message}), req_id);
    reply_json(host, &reply, now);
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
pub fn heartbeat<'a>(
    feeds: impl Iterator<Item = (&'a str, &'a str, Option<u64>)>,
    market_open: bool,
    now: u64,
) -> Vec<u8> {
    let feeds: Vec<Value> =
        feeds.map(|(name, state, age)| json!({"name": name, "state": state, "last_tick_age_ms": age})).collect();
    json!({"type": "heartbeat", "ts": now, "market_open": market_open, "feeds": feeds}).to_string().into_bytes()
}

/// `{"type":"market_status","market_open":..,"ts":..}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    json!({"type": "market_status", "market_open": open, "ts": now}).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::pair::{too_deep, Action, Pair};
    use super::super::{ChanKind, Dialect};
    use crate::encode::{Encoding, Format};
    use crate::session::SavedSub;
    use crate::subs::Delivery;
    use crate::tick::Mode;
    use crate::SERVER_NAME;

    /// A `/stream` connection at `path`, its welcome taken.
    fn open(path: &str) -> Pair {
        let mut p = Pair::new();
        p.open(path, Dialect::Native).unwrap();
        p.take();
        p
    }

    /// Send `req`; the one reply it gets, as JSON.
    fn ask(p: &mut Pair, req: &str) -> Value {
        p.send(req);
        let r = p.replies();
        assert_eq!(r.len(), 1, "{req}: {r:?}");
        r.into_iter().next().unwrap()
    }

    /// Did any action change what the connection is subscribed to?
    fn changed(acts: &[Action]) -> bool {
        acts.iter()
            .any(|a| matches!(a, Action::Subscribe(..) | Action::Unsubscribe(_) | Action::Join(..) | Action::Leave(_)))
    }

    fn enc(format: Format, mode: Mode) -> Encoding {
        Encoding { format, mode }
    }

    /// The spec's examples (`protocol.md`, native protocol), verbatim: the
    /// welcome, the subscription response with a rejected token, the error.
    #[test]
    fn spec_examples() {
        let mut p = Pair::new();
        p.open("/stream?client_id=a1b2", Dialect::Native).unwrap();
        let acts = p.take();
        assert_eq!(acts[0], Action::Accept(Dialect::Native));
        let Action::Reply(w) = &acts[1] else { panic!("{acts:?}") };
        let w: Value = serde_json::from_str(w).unwrap();
        assert_eq!(
            w,
            json!({"type":"welcome","client_id":"a1b2","server":SERVER_NAME,"format":"json","market_open":true})
        );
        assert_eq!(SERVER_NAME, "tickcast 0.1.0", "the spec's example names the server so");
        assert_eq!(p.client_id, "a1b2");

        p.send(r#"{"action":"subscribe","tokens":[2885,99999999],"mode":"quote","id":7}"#);
        let acts = p.take();
        let reliance = p.slot(2885);
        assert_eq!(acts[0], Action::Subscribe(reliance, enc(Format::Json, Mode::Quote), Delivery::Conflate));
        let Action::Reply(r) = &acts[1] else { panic!("{acts:?}") };
        assert_eq!(
            serde_json::from_str::<Value>(r).unwrap(),
            json!({"type":"subscription_response","id":7,"status":"success","data":{"action":"subscribe","subscribed":[{"token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":"quote"}],"rejected":[{"token":99999999,"reason":"unknown token"}],"total_subscribed":1}})
        );
        assert_eq!(acts.len(), 2, "{acts:?}");

        assert_eq!(
            ask(&mut p, r#"{"action":"subscribe","tokens":"2885","id":7}"#),
            json!({"type":"error","id":7,"code":"bad_request","message":"field `tokens` must be an array of integers"})
        );

        let ts = p.now;
        assert_eq!(ask(&mut p, r#"{"action":"ping"}"#), json!({"type":"pong","ts":ts}));
    }

    /// A client id is generated when absent; the market state is the host's.
    #[test]
    fn welcome_without_client_id_when_closed() {
        let mut p = Pair::new();
        p.market_open = false;
        p.open("/stream", Dialect::Native).unwrap();
        let w = &p.replies()[0];
        assert_eq!(w["market_open"], false);
        let cid = w["client_id"].as_str().unwrap();
        assert_eq!(cid.len(), 16, "{cid}");
        assert_eq!(cid, p.client_id);
    }

    /// The symbol path: `EXCHANGE:SYMBOL` or a bare symbol (NSE), `stocks`
    /// as an alias, unknown ones rejected, a repeat subscribed once.
    #[test]
    fn subscribe_by_symbol_and_stocks_alias() {
        let mut p = open("/stream");
        p.send(r#"{"action":"subscribe","symbols":["NSE:RELIANCE","TCS","BSE:NOPE","reliance"],"stocks":["INFY"]}"#);
        let acts = p.take();
        let subs: Vec<_> = acts.iter().filter(|a| matches!(a, Action::Subscribe(..))).cloned().collect();
        let ltp = enc(Format::Json, Mode::Ltp);
        assert_eq!(
            subs,
            [
                Action::Subscribe(p.slot(2885), ltp, Delivery::Conflate),
                Action::Subscribe(p.slot(11536), ltp, Delivery::Conflate),
                Action::Subscribe(p.slot(1594), ltp, Delivery::Conflate),
            ]
        );
        let Some(Action::Reply(r)) = acts.last() else { panic!("{acts:?}") };
        assert_eq!(
            serde_json::from_str::<Value>(r).unwrap(),
            json!({"type":"subscription_response","status":"success","data":{"action":"subscribe","subscribed":[
                {"token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":"ltp"},
                {"token":11536,"symbol":"TCS","exchange":"NSE","mode":"ltp"},
                {"token":1594,"symbol":"INFY","exchange":"NSE","mode":"ltp"}],
                "rejected":[{"symbol":"BSE:NOPE","reason":"unknown symbol"}],"total_subscribed":3}})
        );
        assert!(!acts.iter().any(|a| matches!(a, Action::BadRequest(_))), "a rejected target is not a bad request");
    }

    /// `mode` by name (any case) or number; subscribing again changes the
    /// mode, not the count.
    #[test]
    fn modes_and_subscribing_again_changes_the_mode() {
        let mut p = open("/stream");
        let reliance = p.slot(2885);
        let cases = [
            (r#"{"action":"subscribe","tokens":[2885]}"#, Mode::Ltp, "ltp"),
            (r#"{"action":"subscribe","tokens":[2885],"mode":"quote"}"#, Mode::Quote, "quote"),
            (r#"{"action":"subscribe","tokens":[2885],"mode":"depth"}"#, Mode::Depth, "depth"),
            (r#"{"action":"subscribe","tokens":[2885],"mode":1}"#, Mode::Ltp, "ltp"),
            (r#"{"action":"subscribe","tokens":[2885],"mode":2}"#, Mode::Quote, "quote"),
            (r#"{"action":"subscribe","tokens":[2885],"mode":"DEPTH"}"#, Mode::Depth, "depth"),
        ];
        for (req, mode, name) in cases {
            p.send(req);
            let acts = p.take();
            assert_eq!(acts[0], Action::Subscribe(reliance, enc(Format::Json, mode), Delivery::Conflate), "{req}");
            let Action::Reply(r) = &acts[1] else { panic!("{req}: {acts:?}") };
            let r: Value = serde_json::from_str(r).unwrap();
            assert_eq!(r["data"]["subscribed"][0]["mode"], name, "{req}");
            assert_eq!(r["data"]["total_subscribed"], 1, "{req}");
            assert_eq!(p.slots, [reliance]);
        }
    }

    /// Unsubscribe by token and by symbol; not subscribed and unknown
    /// targets are rejected; all rejected is an error status.
    #[test]
    fn unsubscribe_by_token_and_symbol() {
        let mut p = open("/stream");
        ask(&mut p, r#"{"action":"subscribe","tokens":[2885,11536,1594]}"#);
        p.send(r#"{"action":"unsubscribe","tokens":[2885,3045,7],"symbols":["TCS"],"id":"u"}"#);
        let acts = p.take();
        assert_eq!(acts[..2], [Action::Unsubscribe(p.slot(2885)), Action::Unsubscribe(p.slot(11536))]);
        let Action::Reply(r) = &acts[2] else { panic!("{acts:?}") };
        assert_eq!(
            serde_json::from_str::<Value>(r).unwrap(),
            json!({"type":"subscription_response","id":"u","status":"success","data":{"action":"unsubscribe",
                "unsubscribed":[{"token":2885,"symbol":"RELIANCE","exchange":"NSE"},{"token":11536,"symbol":"TCS","exchange":"NSE"}],
                "rejected":[{"token":3045,"symbol":"SBIN","exchange":"NSE","reason":"not subscribed"},{"token":7,"reason":"unknown token"}],
                "total_subscribed":1}})
        );
        assert_eq!(p.slots, [p.slot(1594)]);
        let r = ask(&mut p, r#"{"action":"unsubscribe","symbols":["RELIANCE"]}"#);
        assert_eq!(r["status"], "error");
        assert_eq!(r["data"]["rejected"][0]["reason"], "not subscribed");
        let r = ask(&mut p, r#"{"action":"unsubscribe","symbols":["INFY"]}"#);
        assert_eq!(r["status"], "success");
        assert_eq!(r["data"]["total_subscribed"], 0);
        assert!(p.slots.is_empty());
    }

    /// `get_subscriptions` lists each instrument with its mode and delivery
    /// (and rate), then channels; a request's `delivery` reaches the host.
    #[test]
    fn get_subscriptions_lists_modes_delivery_and_channels() {
        let mut p = open("/stream");
        let r = ask(&mut p, r#"{"action":"get_subscriptions","id":1}"#);
        assert_eq!(
            r,
            json!({"type":"subscription_response","id":1,"status":"success","data":{"action":"get_subscriptions","subscriptions":[],"total_subscribed":0}})
        );
        p.send(r#"{"action":"subscribe","tokens":[2885],"mode":"quote","delivery":"lossless"}"#);
        p.send(r#"{"action":"subscribe","tokens":[11536],"max_rate":3}"#);
        p.send(r#"{"action":"subscribe","tokens":[1594],"mode":"depth","delivery":"max_rate","max_rate":0.5}"#);
        p.send(r#"{"action":"subscribe","channels":["signals"],"delivery":"conflate"}"#);
        let acts = p.take();
        let subs: Vec<&Action> =
            acts.iter().filter(|a| matches!(a, Action::Subscribe(..) | Action::Join(..))).collect();
        let json_sub = |token, mode, delivery| Action::Subscribe(p.slot(token), enc(Format::Json, mode), delivery);
        let every = |interval_ns| Delivery::MaxRate { interval_ns };
        assert_eq!(
            subs,
            [
                &json_sub(2885, Mode::Quote, Delivery::Lossless),
                &json_sub(11536, Mode::Ltp, every(333_333_333)),
                &json_sub(1594, Mode::Depth, every(2_000_000_000)),
                &Action::Join("signals".into(), ChanKind::Native),
            ]
        );
        assert_eq!(
            ask(&mut p, r#"{"action":"get_subscriptions"}"#),
            json!({"type":"subscription_response","status":"success","data":{"action":"get_subscriptions","subscriptions":[
                {"token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":"quote","delivery":"lossless"},
                {"token":11536,"symbol":"TCS","exchange":"NSE","mode":"ltp","delivery":"max_rate","max_rate":3},
                {"token":1594,"symbol":"INFY","exchange":"NSE","mode":"depth","delivery":"max_rate","max_rate":0.5},
                {"channel":"signals"}],"total_subscribed":4}})
        );
        let r = ask(&mut p, r#"{"action":"unsubscribe","channels":["signals","nope"]}"#);
        assert_eq!(r["data"]["unsubscribed"], json!([{"channel":"signals"}]));
        assert_eq!(r["data"]["rejected"], json!([{"channel":"nope","reason":"not subscribed"}]));
        assert_eq!(r["data"]["total_subscribed"], 3);
    }

    /// A bad channel name is rejected in the reply, not a refused request.
    #[test]
    fn bad_channel_names_are_rejected_one_by_one() {
        let mut p = open("/stream");
        let r = ask(&mut p, r#"{"action":"subscribe","tokens":[2885],"channels":["has space"]}"#);
        assert_eq!(r["status"], "success");
        assert_eq!(r["data"]["rejected"][0]["channel"], "has space");
        assert!(r["data"]["rejected"][0]["reason"].as_str().unwrap().contains("channel names are"), "{r}");
        assert_eq!(r["data"]["total_subscribed"], 1);
    }

    /// `format=`, `tokens=` and `mode=` in the URL: rkyv subscriptions from
    /// the start; a bad format or client id refuses the upgrade.
    #[test]
    fn url_format_tokens_and_mode() {
        let mut p = Pair::new();
        p.open("/stream?format=rkyv&tokens=2885,11536&mode=depth", Dialect::Native).unwrap();
        let acts = p.take();
        let rkyv_depth = enc(Format::Rkyv, Mode::Depth);
        assert_eq!(
            acts[2..4],
            [
                Action::Subscribe(p.slot(2885), rkyv_depth, Delivery::Conflate),
                Action::Subscribe(p.slot(11536), rkyv_depth, Delivery::Conflate),
            ]
        );
        let replies: Vec<Value> = acts
            .iter()
            .filter_map(|a| if let Action::Reply(r) = a { serde_json::from_str(r).ok() } else { None })
            .collect();
        assert_eq!(replies[0]["format"], "rkyv");
        assert_eq!(replies[1]["data"]["total_subscribed"], 2);
        assert_eq!(replies[1]["data"]["subscribed"][1]["mode"], "depth");
        assert_eq!(p.format, Format::Rkyv);

        let mut p = Pair::new();
        p.open("/stream?format=json&tokens=2885", Dialect::Native).unwrap();
        assert_eq!(p.subs[&p.slot(2885)], (enc(Format::Json, Mode::Ltp), Delivery::Conflate));

        for (path, want) in [
            ("/stream?format=xml", "format `xml`: expected json or rkyv"),
            ("/stream?client_id=", "client_id must be"),
            (&format!("/stream?client_id={}", "x".repeat(129)), "client_id must be"),
        ] {
            let mut p = Pair::new();
            let (status, err) = p.open(path, Dialect::Native).unwrap_err();
            assert_eq!(status, 400);
            assert!(err.contains(want), "{path}: {err}");
            assert!(p.take().is_empty(), "{path}: refused before the upgrade");
        }

        // Tokens that are not integers: an in-band error, the connection stays.
        // The query cannot add fields to the request it becomes.
        for query in ["tokens=RELIANCE", "tokens=2885%5D%2C%22mode%22%3A%22depth%22%2C%22x%22%3A%5B1"] {
            let mut p = Pair::new();
            p.open(&format!("/stream?{query}"), Dialect::Native).unwrap();
            let acts = p.take();
            assert!(acts.iter().any(|a| matches!(a, Action::BadRequest(_))), "{query}: {acts:?}");
            assert!(!changed(&acts), "{query}");
            assert!(p.open);
        }
    }

    /// Any request's `id` (any JSON value) is echoed in its reply, errors
    /// included; without one, the reply has none.
    #[test]
    fn request_ids_are_echoed() {
        let mut p = open("/stream");
        for id in [json!(7), json!("abc"), json!({"n":[1,2]}), json!(-3), json!(null)] {
            for req in [
                json!({"action":"ping","id":id}),
                json!({"action":"get_subscriptions","id":id}),
                json!({"action":"subscribe","tokens":[2885],"id":id}),
                json!({"action":"unsubscribe","tokens":[2885],"id":id}),
                json!({"action":"snapshot","tokens":[2885],"id":id}),
                json!({"action":"dance","id":id}),
                json!({"action":"subscribe","tokens":[true],"id":id}),
            ] {
                let r = ask(&mut p, &req.to_string());
                assert_eq!(r.get("id"), Some(&id), "{req} -> {r}");
            }
        }
        for req in [r#"{"action":"ping"}"#, r#"{"action":"snapshot","tokens":[2885]}"#, r#"{"action":"nope"}"#] {
            let r = ask(&mut p, req);
            assert!(r.get("id").is_none(), "{req} -> {r}");
        }
    }

    /// Past `max_subscriptions` each further instrument is rejected with
    /// the reason; changing the mode of a held one still works.
    #[test]
    fn subscription_limit() {
        let mut p = open("/stream");
        p.config.max_subscriptions = 2;
        p.send(r#"{"action":"subscribe","tokens":[2885,11536,1594]}"#);
        let acts = p.take();
        assert_eq!(acts.iter().filter(|a| matches!(a, Action::Subscribe(..))).count(), 2);
        let Some(Action::Reply(r)) = acts.last() else { panic!("{acts:?}") };
        let r: Value = serde_json::from_str(r).unwrap();
        assert_eq!(r["status"], "success");
        assert_eq!(
            r["data"]["rejected"],
            json!([{"token":1594,"symbol":"INFY","exchange":"NSE","reason":"subscription limit reached (2 per connection)"}])
        );
        assert_eq!(r["data"]["total_subscribed"], 2);
        let r = ask(&mut p, r#"{"action":"subscribe","symbols":["INFY"]}"#);
        assert_eq!(r["status"], "error", "all rejected");
        let r = ask(&mut p, r#"{"action":"subscribe","tokens":[2885],"mode":"depth"}"#);
        assert_eq!(r["status"], "success", "a held instrument changes mode at the limit");
        assert_eq!(p.subs[&p.slot(2885)].0.mode, Mode::Depth);
    }

    /// One request names at most max(max_subscriptions, 1000) targets
    /// (after folding repeats): past that, refused as a whole.
    #[test]
    fn too_many_targets_in_one_request() {
        let mut p = open("/stream");
        p.config.max_subscriptions = 10;
        let mut tokens: Vec<u32> = (0..999).collect(); // unknown tokens
        tokens.extend([2885, 2885, 2885]);
        let r = ask(&mut p, &json!({"action":"subscribe","tokens":tokens}).to_string());
        assert_eq!(r["type"], "subscription_response", "1000 targets once repeats fold: {}", r["type"]);
        tokens.push(11536);
        assert_eq!(
            p.refuse(&json!({"action":"subscribe","tokens":tokens,"id":9}).to_string()).1,
            json!({"type":"error","id":9,"code":"limit_exceeded","message":"1001 targets in one request; at most 1000"})
        );
    }

    /// `snapshot`: the last value of each (quote by default, flagged
    /// `snapshot`), without subscribing; no value yet is a rejection.
    #[test]
    fn snapshot_gives_last_values_without_subscribing() {
        let mut p = open("/stream");
        // The spec's `market_data` example, as a last value.
        let mut t = p.value(2885, 1042, 285_050);
        (t.ltq, t.volume, t.open, t.high, t.low, t.close) = (10, 1_500_000, 282_000, 286_000, 281_500, 284_825);
        (t.bid, t.ask, t.bid_qty, t.ask_qty) = (285_045, 285_055, 500, 750);
        t.ts_ns = 1_763_712_000_123_456_789;
        p.values.insert(p.slot(2885), t);
        p.send(r#"{"action":"snapshot","tokens":[2885,11536,5],"id":3}"#);
        let acts = p.take();
        assert!(!changed(&acts), "{acts:?}");
        let [Action::Reply(r)] = &acts[..] else { panic!("{acts:?}") };
        assert_eq!(
            serde_json::from_str::<Value>(r).unwrap(),
            json!({"type":"snapshot","status":"success","id":3,"data":[
                {"type":"market_data","token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":2,"seq":1042,"ts":1_763_712_000_123_456_789_u64,"snapshot":true,
                 "data":{"ltp":2850.5,"ltq":10,"volume":1500000,"open":2820.0,"high":2860.0,"low":2815.0,"close":2848.25,"bid":2850.45,"ask":2850.55,"bid_qty":500,"ask_qty":750,"oi":0}}],
                "rejected":[{"token":11536,"symbol":"TCS","exchange":"NSE","reason":"no data yet"},{"token":5,"reason":"unknown token"}]})
        );
        p.value(11536, 9, 410_000);
        let r = ask(&mut p, r#"{"action":"snapshot","symbols":["TCS"],"mode":"ltp"}"#);
        let ts = p.now;
        assert_eq!(
            r,
            json!({"type":"snapshot","status":"success","data":[
                {"type":"market_data","token":11536,"symbol":"TCS","exchange":"NSE","mode":1,"seq":9,"ts":ts,"snapshot":true,"data":{"ltp":4100.0}}],
                "rejected":[]})
        );
        assert!(p.slots.is_empty());
    }

    /// The same client id gets its saved subscriptions back (in the URL's
    /// format) before the URL's tokens are subscribed.
    #[test]
    fn restores_a_session() {
        let mut p = Pair::new();
        p.saved = Some(vec![
            SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Lossless },
            SavedSub { token: 4, mode: Mode::Ltp, delivery: Delivery::Conflate }, // gone from the master
            SavedSub { token: 11536, mode: Mode::Depth, delivery: Delivery::MaxRate { interval_ns: 100_000_000 } },
        ]);
        p.open("/stream?client_id=c&format=rkyv&tokens=1594", Dialect::Native).unwrap();
        let acts = p.take();
        let subs: Vec<_> = acts.iter().filter(|a| matches!(a, Action::Subscribe(..))).cloned().collect();
        assert_eq!(
            subs,
            [
                Action::Subscribe(p.slot(2885), enc(Format::Rkyv, Mode::Quote), Delivery::Lossless),
                Action::Subscribe(
                    p.slot(11536),
                    enc(Format::Rkyv, Mode::Depth),
                    Delivery::MaxRate { interval_ns: 100_000_000 }
                ),
                Action::Subscribe(p.slot(1594), enc(Format::Rkyv, Mode::Ltp), Delivery::Conflate),
            ]
        );
        let replies: Vec<Value> = acts
            .iter()
            .filter_map(|a| if let Action::Reply(r) = a { serde_json::from_str(r).ok() } else { None })
            .collect();
        assert_eq!(replies.len(), 3);
        assert_eq!(
            replies[1],
            json!({"type":"subscription_response","status":"success","data":{"action":"restore","subscribed":[
                {"token":2885,"symbol":"RELIANCE","exchange":"NSE","mode":"quote"},
                {"token":11536,"symbol":"TCS","exchange":"NSE","mode":"depth"}],"rejected":[],"total_subscribed":2}})
        );
        assert_eq!(replies[2]["data"]["total_subscribed"], 3);
        assert!(p.saved.is_none(), "taken once");
    }

    /// An idle, drained connection gets the heartbeat every `heartbeat`;
    /// anything sent restarts the wait.
    #[test]
    fn heartbeat_when_idle() {
        let mut p = open("/stream");
        assert_eq!(p.config.heartbeat.as_millis(), 1000);
        assert_eq!(p.due_in(1000), [Action::Heartbeat]);
        assert_eq!(p.last_tx_ns, p.now);
        p.advance(500);
        ask(&mut p, r#"{"action":"ping"}"#);
        p.advance(999);
        assert!(p.take().is_empty(), "a reply is traffic");
        assert_eq!(p.drained_after(5000), [Action::Heartbeat]);
    }

    /// The heartbeat's and market status' shapes (spec).
    #[test]
    fn heartbeat_and_market_status_shapes() {
        let hb: Value =
            serde_json::from_slice(&super::heartbeat([("sim", "live", Some(3))].into_iter(), true, 5)).unwrap();
        assert_eq!(
            hb,
            json!({"type":"heartbeat","ts":5,"market_open":true,"feeds":[{"name":"sim","state":"live","last_tick_age_ms":3}]})
        );
        let ts = 1_763_712_000_123_456_789_u64;
        let ms: Value = serde_json::from_slice(&super::market_status(false, ts)).unwrap();
        assert_eq!(ms, json!({"type":"market_status","market_open":false,"ts":1_763_712_000_123_456_789_u64}));
        let ms: Value = serde_json::from_slice(&super::super::market_status(Dialect::Native, true, ts)).unwrap();
        assert_eq!(ms["market_open"], true);
        let mut gap = Vec::new();
        super::write_gap(&mut gap, 2885, 1043, 1050);
        assert_eq!(
            serde_json::from_slice::<Value>(&gap).unwrap(),
            json!({"type":"gap","token":2885,"from_seq":1043,"to_seq":1050})
        );
    }

    /// Every refused request: an `error` with its code (and the `id`), the
    /// bad request counted, nothing subscribed or dropped, the connection
    /// open.
    #[test]
    fn bad_requests() {
        let deep = too_deep();
        let cases: &[(&str, &str, &str)] = &[
            ("not json", "bad_request", "malformed JSON"),
            (&deep, "bad_request", "nested deeper"),
            ("[1,2]", "bad_request", "a request must be a JSON object"),
            ("null", "bad_request", "a request must be a JSON object"),
            (r#"{"id":1}"#, "bad_request", "missing field `action`"),
            (r#"{"action":5}"#, "bad_request", "field `action` must be a string"),
            (r#"{"action":"dance"}"#, "unknown_action", "unknown action `dance` (expected one of subscribe,"),
            (r#"{"action":"subscribe"}"#, "bad_request", "needs `tokens` (integers), `symbols`"),
            (r#"{"action":"subscribe","tokens":"2885"}"#, "bad_request", "`tokens` must be an array of integers"),
            (r#"{"action":"subscribe","tokens":[2885.5]}"#, "bad_request", "`tokens` must be an array of integers"),
            (r#"{"action":"subscribe","tokens":["2885"]}"#, "bad_request", "`tokens` must be an array of integers"),
            (r#"{"action":"subscribe","symbols":"TCS"}"#, "bad_request", "`symbols` must be an array of strings"),
            (r#"{"action":"subscribe","stocks":[1]}"#, "bad_request", "`stocks` must be an array of strings"),
            (r#"{"action":"subscribe","channels":"signals"}"#, "bad_request", "`channels` must be an array of strings"),
            (r#"{"action":"subscribe","tokens":[11536],"channels":[1]}"#, "bad_request", "`channels` must be an array"),
            (r#"{"action":"subscribe","tokens":[11536],"mode":"full2"}"#, "bad_request", "field `mode` must be one of"),
            (r#"{"action":"subscribe","tokens":[11536],"mode":4}"#, "bad_request", "field `mode` must be one of"),
            (r#"{"action":"subscribe","tokens":[11536],"max_rate":0}"#, "bad_request", "`max_rate` must be a number"),
            (r#"{"action":"subscribe","tokens":[11536],"max_rate":"5"}"#, "bad_request", "`max_rate` must be a number"),
            (r#"{"action":"subscribe","tokens":[11536],"max_rate":2e6}"#, "bad_request", "from 0.01 to 1000000"),
            (
                r#"{"action":"subscribe","tokens":[11536],"delivery":"max_rate"}"#,
                "bad_request",
                "needs a `max_rate` field",
            ),
            (r#"{"action":"subscribe","tokens":[11536],"delivery":"fast"}"#, "bad_request", "field `delivery` must be"),
            (r#"{"action":"unsubscribe"}"#, "bad_request", "needs `tokens`"),
            (r#"{"action":"unsubscribe","symbols":[true]}"#, "bad_request", "`symbols` must be an array of strings"),
            (r#"{"action":"unsubscribe","tokens":[2885],"channels":"signals"}"#, "bad_request", "`channels` must be"),
            (r#"{"action":"snapshot"}"#, "bad_request", "needs `tokens`"),
            (r#"{"action":"snapshot","tokens":[2885],"mode":"x"}"#, "bad_request", "field `mode` must be one of"),
            (r#"{"action":"snapshot","tokens":{}}"#, "bad_request", "`tokens` must be an array"),
        ];
        for &(req, code, want) in cases {
            let mut p = open("/stream");
            ask(&mut p, r#"{"action":"subscribe","tokens":[2885]}"#);
            // Only a counted bad request and its reply: nothing changed.
            let (counted, r) = p.refuse(req);
            assert!(counted.starts_with(code), "{req}: {counted}");
            assert_eq!((r["type"].as_str(), r["code"].as_str()), (Some("error"), Some(code)), "{req}: {r}");
            let msg = r["message"].as_str().unwrap();
            assert!(msg.contains(want), "{req}: {msg}");
            assert!(p.open, "{req} closed the connection");
            assert_eq!(p.slots, [p.slot(2885)], "{req}");
        }
    }

    /// A binary message: `unsupported`, the connection stays.
    #[test]
    fn binary_messages_are_refused() {
        let mut p = open("/stream");
        p.send_binary();
        assert_eq!(
            p.refusal().1,
            json!({"type":"error","code":"unsupported","message":"binary messages are not accepted; send requests as JSON text frames"})
        );
        assert!(p.open);
    }
}
