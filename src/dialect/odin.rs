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

use super::{clip, Dialect, Host};
use crate::encode::dialects::iso_string;
use crate::encode::{Encoding, Format};
use crate::instrument::Slot;
use crate::tick::Mode;
use crate::ws::handshake::Request;

/// Odin has no modes: every subscriber gets the full quote.
const ENC: Encoding = Encoding { format: Format::Odin, mode: Mode::Quote };

/// Most targets in one request (bounds the work and the reply).
const MAX_TARGETS: usize = 5000;

const ACTIONS: &str = "subscribe, unsubscribe, get_subscriptions, ping";

/// Welcome (exactly the seed's), restored session, URL subscriptions.
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<(), String> {
    let enhanced = req.path == "/enhanced-stream";
    let client_id = super::client_id(req)?;
    let mut initial = Vec::new();
    for key in ["tokens", "stocks", "symbols"] {
        if let Some(list) = req.param(key) {
            initial.extend(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())));
        }
    }
    let market_open = host.market_open();
    host.accept(req, Dialect::Odin)?;
    if enhanced {
        host.set_client_id(client_id.clone(), req.param("client_id").is_some());
    }
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
    super::reply_json(host, &welcome, now);

    if enhanced {
        if let Some(saved) = host.restore() {
            let mut restored = Vec::new();
            for s in saved {
                if let Some(slot) = host.registry().slot_of_token(s.token) {
                    if host.subscribe(slot, ENC, s.delivery, now).is_ok() {
                        restored.push(json!(&*host.registry().get(slot).symbol));
                    }
                }
            }
            respond(host, "restore", "subscribed_stocks", restored, Vec::new(), now);
        }
    }
    if !initial.is_empty() {
        let (ok, failed) = subscribe(host, &initial, now);
        respond(host, "subscribe", "subscribed_stocks", ok, failed, now);
    }
    Ok(())
}

/// Handle one request.
pub(crate) fn handle(host: &mut dyn Host, payload: &mut [u8], now: u64) {
    super::handle_json(host, payload, now, dispatch, reply_error);
}

fn dispatch(host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), String> {
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
            let (ok, failed) = subscribe(host, &targets(v)?, now);
            respond(host, "subscribe", "subscribed_stocks", ok, failed, now);
        }
        "unsubscribe" => {
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for t in targets(v)? {
                match resolve(host.registry(), &t) {
                    Ok(slot) if host.unsubscribe(slot) => done.push(json!(&*host.registry().get(slot).symbol)),
                    Ok(slot) => {
                        failed.push(json!({"stock": &*host.registry().get(slot).symbol, "reason": "not subscribed"}))
                    }
                    Err(e) => failed.push(e),
                }
            }
            respond(host, "unsubscribe", "unsubscribed_stocks", done, failed, now);
        }
        "get_subscriptions" => {
            let list = host.slots().iter().map(|&s| json!(&*host.registry().get(s).symbol)).collect();
            respond(host, "get_subscriptions", "subscribed_stocks", list, Vec::new(), now);
        }
        "ping" => {
            let pong = json!({"type": "pong", "status": "success", "timestamp": iso_string(now)});
            super::reply_json(host, &pong, now);
        }
        other => return Err(format!("unknown action `{}` (expected one of {ACTIONS})", clip(other))),
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
fn resolve(reg: &crate::instrument::Registry, t: &Value) -> Result<Slot, Value> {
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
            Value::String(s) => clip(s),
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

fn subscribe(host: &mut dyn Host, targets: &[Value], now: u64) -> (Vec<Value>, Vec<Value>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    let delivery = host.default_delivery();
    for t in targets {
        match resolve(host.registry(), t) {
            Ok(slot) => {
                let symbol = json!(&*host.registry().get(slot).symbol);
                if ok.contains(&symbol) {
                    continue;
                }
                match host.subscribe(slot, ENC, delivery, now) {
                    Ok(()) => ok.push(symbol),
                    Err(why) => failed.push(json!({"stock": symbol, "reason": why})),
                }
            }
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}

fn respond(host: &mut dyn Host, action: &str, key: &str, ok: Vec<Value>, failed: Vec<Value>, now: u64) {
    let total = host.slots().len();
    let status = if ok.is_empty() && !failed.is_empty() { "error" } else { "success" };
    let mut data = serde_json::Map::new();
    data.insert("action".into(), json!(action));
    data.insert(key.into(), Value::Array(ok));
    if !failed.is_empty() {
        host.bad_request(&format!("{action}: {} of the stocks failed", failed.len()));
        data.insert("failed_stocks".into(), Value::Array(failed));
    }
    data.insert("total_subscribed".into(), json!(total));
    let reply = json!({"type": "subscription_response", "status": status, "data": data});
    super::reply_json(host, &reply, now);
}

/// `{"type":"error","status":"error","message":…}`; the connection stays.
pub(crate) fn reply_error(host: &mut dyn Host, msg: &str, now: u64) {
    host.bad_request(msg);
    let reply = json!({"type": "error", "status": "error", "message": msg, "timestamp": iso_string(now)});
    super::reply_json(host, &reply, now);
}

/// `{"type":"market_status","status":"open"|"closed","data":{"market_open":…,"message":…},"timestamp":…}`.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    let (status, message) = if open {
        ("open", "Market open: live data resumes for your subscriptions")
    } else {
        ("closed", "Market closed: connection and subscriptions stay until the next open")
    };
    json!({"type": "market_status", "status": status, "data": {"market_open": open, "message": message}, "timestamp": iso_string(now)})
        .to_string()
        .into_bytes()
}

/// Nothing periodic: Odin clients get data or nothing (WebSocket pings from
/// the client are answered by the worker).
pub(crate) fn housekeeping(_host: &mut dyn Host, _now: u64) {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::pair::{too_deep, Action, Pair};
    use super::super::Dialect;

    /// The seed's session (`000_…`, "Dynamic Stock Management"), message by
    /// message: welcome, subscribe, subscribe more, unsubscribe, list.
    #[test]
    fn seed_session() {
        let mut p = Pair::new();
        p.open("/enhanced-stream?client_id=trading_app_123", Dialect::Odin).unwrap();
        let welcome = p.replies();
        assert_eq!(
            welcome,
            [json!({
                "type": "welcome",
                "status": "connected",
                "client_id": "trading_app_123",
                "data": {
                    "message": "Connected to Odin Streamer Enhanced WebSocket",
                    "features": ["dynamic_subscriptions", "market_hours_control", "persistent_connection"],
                    "market_open": true,
                    "instructions": {
                        "subscribe": "{\"type\": \"request\", \"action\": \"subscribe\", \"stocks\": [\"RELIANCE\", \"TCS\"]}",
                        "unsubscribe": "{\"type\": \"request\", \"action\": \"unsubscribe\", \"stocks\": [\"RELIANCE\"]}",
                        "ping": "{\"type\": \"request\", \"action\": \"ping\"}"
                    }
                }
            })]
        );
        assert_eq!(p.client_id, "trading_app_123");

        let steps = [
            (
                r#"{"type":"request","action":"subscribe","stocks":["RELIANCE","TCS","INFY"]}"#,
                json!({"type":"subscription_response","status":"success","data":{"action":"subscribe","subscribed_stocks":["RELIANCE","TCS","INFY"],"total_subscribed":3}}),
            ),
            (
                r#"{"type":"request","action":"subscribe","stocks":["WIPRO","HDFCBANK"]}"#,
                json!({"type":"subscription_response","status":"success","data":{"action":"subscribe","subscribed_stocks":["WIPRO","HDFCBANK"],"total_subscribed":5}}),
            ),
            (
                r#"{"type":"request","action":"unsubscribe","stocks":["TCS","INFY"]}"#,
                json!({"type":"subscription_response","status":"success","data":{"action":"unsubscribe","unsubscribed_stocks":["TCS","INFY"],"total_subscribed":3}}),
            ),
            (
                r#"{"type":"request","action":"get_subscriptions"}"#,
                json!({"type":"subscription_response","status":"success","data":{"action":"get_subscriptions","subscribed_stocks":["RELIANCE","WIPRO","HDFCBANK"],"total_subscribed":3}}),
            ),
        ];
        for (request, reply) in steps {
            p.send(request);
            assert_eq!(p.replies(), [reply], "after {request}");
        }
    }

    /// `/live-stream?tokens=` subscribes from the URL: tokens as in the seed.
    #[test]
    fn live_stream_subscribes_from_the_url() {
        let mut p = Pair::new();
        p.open("/live-stream?tokens=2885,11536", Dialect::Odin).unwrap();
        let replies = p.replies();
        assert_eq!(replies[0]["data"]["message"], "Connected to Odin Streamer Live WebSocket");
        assert_eq!(replies[1]["data"]["subscribed_stocks"], json!(["RELIANCE", "TCS"]));
        assert_eq!(p.slots, [p.slot(2885), p.slot(11536)]);
        assert!(p.client_id.is_empty(), "a live stream keeps no session");
    }

    /// Tokens as strings or numbers; unknown ones listed with the reason,
    /// the rest subscribed; a repeat is subscribed once.
    #[test]
    fn mixed_targets() {
        let mut p = Pair::new();
        p.open("/enhanced-stream", Dialect::Odin).unwrap();
        p.take();
        p.send(r#"{"action":"subscribe","tokens":["2885",11536,2885,999999999],"stocks":["NOPE"]}"#);
        let acts = p.take();
        let subs = acts.iter().filter(|a| matches!(a, Action::Subscribe(..))).count();
        assert_eq!(subs, 2);
        assert!(acts.iter().any(|a| matches!(a, Action::BadRequest(_))), "failures are counted");
        let Some(Action::Reply(r)) = acts.last() else { panic!("no reply: {acts:?}") };
        let r: serde_json::Value = serde_json::from_str(r).unwrap();
        assert_eq!(r["status"], "success");
        assert_eq!(r["data"]["subscribed_stocks"], json!(["RELIANCE", "TCS"]));
        assert_eq!(
            r["data"]["failed_stocks"],
            json!([{"stock":"NOPE","reason":"unknown symbol"},{"stock":"999999999","reason":"unknown token"}])
        );
    }

    /// Every bad request gets an error reply and the connection stays open.
    #[test]
    fn bad_requests() {
        let cases = [
            ("not json", "malformed JSON"),
            ("[1,2]", "must be a JSON object"),
            (r#"{"type":"reply","action":"ping"}"#, "`type` must be \"request\""),
            (r#"{"type":"request"}"#, "missing field `action`"),
            (r#"{"action":7}"#, "`action` must be a string"),
            (r#"{"action":"dance"}"#, "unknown action `dance`"),
            (r#"{"action":"subscribe"}"#, "needs `stocks`"),
            (r#"{"action":"subscribe","stocks":"RELIANCE"}"#, "`stocks` must be an array"),
            (r#"{"action":"subscribe","stocks":[1]}"#, "array of strings"),
            (r#"{"action":"subscribe","tokens":[true]}"#, "token numbers or strings"),
            (&too_deep(), "nested deeper"),
        ];
        for (request, want) in cases {
            let mut p = Pair::new();
            p.open("/enhanced-stream", Dialect::Odin).unwrap();
            p.take();
            let (_, r) = p.refuse(request);
            assert_eq!(r["type"], "error", "{request}");
            let msg = r["message"].as_str().unwrap();
            assert!(msg.contains(want), "{request}: {msg}");
            assert!(p.open, "{request} closed the connection");
        }
        let mut p = Pair::new();
        p.open("/enhanced-stream", Dialect::Odin).unwrap();
        p.take();
        let many: Vec<String> = (0..5001).map(|i| i.to_string()).collect();
        p.send(&json!({"action":"subscribe","tokens":many}).to_string());
        assert!(p.replies()[0]["message"].as_str().unwrap().contains("at most 5000"));
    }

    /// The same client id gets its subscriptions back after a reconnect.
    #[test]
    fn restores_a_session() {
        let mut p = Pair::new();
        let reliance = p.slot(2885);
        p.saved = Some(vec![crate::session::SavedSub {
            token: 2885,
            mode: crate::tick::Mode::Quote,
            delivery: crate::subs::Delivery::Conflate,
        }]);
        p.open("/enhanced-stream?client_id=a", Dialect::Odin).unwrap();
        let replies = p.replies();
        assert_eq!(replies[1]["data"]["action"], "restore");
        assert_eq!(replies[1]["data"]["subscribed_stocks"], json!(["RELIANCE"]));
        assert_eq!(p.slots, [reliance]);
    }

    #[test]
    fn ping_and_market_status() {
        let mut p = Pair::new();
        p.open("/enhanced-stream", Dialect::Odin).unwrap();
        p.take();
        p.send(r#"{"type":"request","action":"ping"}"#);
        let pong = &p.replies()[0];
        assert_eq!(pong["type"], "pong");
        assert_eq!(pong["timestamp"].as_str().unwrap().len(), 24, "{pong}");
        let closed: serde_json::Value = serde_json::from_slice(&super::market_status(false, p.now)).unwrap();
        assert_eq!(closed["status"], "closed");
        assert_eq!(closed["data"]["market_open"], false);
    }
}
