//! OpenAlgo (seed `003_…`): any path on `--openalgo-listen`. A drop-in for
//! the OpenAlgo WebSocket proxy that the official `openalgo` Python SDK
//! speaks to. Replies go on the control lane; market data is
//! `Format::OpenAlgo` (`encode::dialects::openalgo`).
//!
//! ```json
//! {"action":"authenticate","api_key":"…"}
//! {"type":"auth","status":"success","message":"Authentication successful","broker":"tickcast","user_id":"alice","supported_features":{"ltp":true,"quote":true,"depth":true}}
//! {"type":"auth_response","status":"success","message":"Authentication successful"}
//! {"action":"subscribe","symbols":[{"symbol":"RELIANCE","exchange":"NSE"}],"mode":"Quote"}
//! {"type":"subscribe","status":"success","subscriptions":[{"symbol":"RELIANCE","exchange":"NSE","status":"success","mode":"Quote","depth":5}],"message":"Subscription processing complete","broker":"tickcast"}
//! {"type":"market_data","symbol":"RELIANCE","exchange":"NSE","mode":2,"data":{"ltp":2850.5,…,"timestamp":"2024-12-04T10:30:00"}}
//! {"action":"unsubscribe","symbols":[{"symbol":"RELIANCE","exchange":"NSE"}]}
//! {"type":"unsubscribe","status":"success","message":"Unsubscription processing complete","successful":[{"symbol":"RELIANCE","exchange":"NSE","status":"success"}],"failed":[],"broker":"tickcast"}
//! {"type":"error","status":"error","code":"NOT_AUTHENTICATED","message":"You must authenticate first"}
//! ```
//!
//! Both authentication replies go out: the SDK waits for `auth` (what the
//! real server sends), the seed documents `auth_response`. The SDK sends one
//! message per instrument (`symbol`, `exchange`, numeric `mode`); the seed
//! a `symbols` list with a mode name: both are accepted. A connection may
//! hold an instrument in several modes at once and gets one frame per mode
//! (`Format::OpenAlgo` mode bits). An instrument held in LTP mode only is
//! rate-capped to one frame per 50 ms on the trailing edge, so the newest
//! price always arrives; with Quote or Depth as well, its LTP frames ride
//! with every quote.
//!
//! Errors are the real server's `{"status":"error","code":…,"message":…}`
//! plus `"type":"error"`; the connection stays open. Nothing but
//! `authenticate` and `ping` is served before authentication. The server
//! pings every client (`--openalgo-ping-interval`) and closes one that does
//! not answer (`--openalgo-ping-timeout`, 1011) or does not authenticate
//! in time (`--openalgo-auth-timeout`, 1008).

use serde_json::{json, Value};
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, Count, Dialect, Host};
use crate::encode::dialects::openalgo_mode;
use crate::encode::{Encoding, Format, Marks};
use crate::instrument::{Registry, Slot};
use crate::subs::Delivery;
use crate::tick::{Mode, DEPTH_LEVELS};
use crate::ws::close;
use crate::ws::handshake::Request;

/// What the `broker` fields say.
const BROKER: &str = "tickcast";

/// The seed's LTP throttle: one update per instrument per 50 ms.
const LTP_INTERVAL_NS: u64 = 50_000_000;

/// Wrong or missing keys in a row before the connection is closed.
const MAX_AUTH_FAILURES: u8 = 5;

/// WebSocket ping opcode (RFC 6455 §5.5.2).
const OP_PING: u8 = 0x9;

/// Close code for an unanswered ping, as the `websockets` library the real
/// server runs on sends it.
const KEEPALIVE_TIMEOUT: u16 = 1011;

/// The actions served, for error messages.
const ACTIONS: &str =
    "authenticate, subscribe, unsubscribe, unsubscribe_all, ping, get_broker_info, get_supported_brokers";

/// OpenAlgo per-connection state.
#[derive(Default)]
pub struct State {
    /// `authenticate` succeeded (or a key came with the upgrade request).
    authed: bool,
    /// Wrong or missing keys since the last success.
    auth_failures: u8,
    /// Upgrade time, ns (authentication deadline).
    opened_ns: u64,
    /// When the last ping went out, ns.
    last_ping_ns: u64,
    /// When the unanswered ping went out, ns (0: none outstanding).
    ping_outstanding_ns: u64,
}

/// A request refused as a whole: error frame with this code and message.
struct Refusal(&'static str, String);

fn invalid(msg: impl Into<String>) -> Refusal {
    Refusal("INVALID_PARAMETERS", msg.into())
}

/// Accept the upgrade. Over `--openalgo-max-clients` the client gets an
/// error and close 1013 (in protocol terms, so the SDK's log says why).
///
/// # Errors
/// None of its own: OpenAlgo takes no query parameters besides the API key
/// the worker already checked.
pub(crate) fn open(host: &mut dyn Host, req: &Request, now: u64) -> Result<State, String> {
    host.accept(req, Dialect::OpenAlgo)?;
    // Counted at the accept first, then compared: concurrent upgrades on
    // other workers can only make this refuse, never over-admit.
    let open = host.open_connections(Dialect::OpenAlgo);
    let max = host.config().openalgo.max_clients;
    let st = State { authed: host.user().is_some(), opened_ns: now, last_ping_ns: now, ..State::default() };
    if open > max as u64 {
        host.count(Count::ConnectionRejected);
        let msg = format!("the server is at its OpenAlgo client limit ({max}); try again later");
        send(host, &error_frame("MAX_CLIENTS", &msg), now);
        host.close(close::TRY_AGAIN_LATER, "OpenAlgo client limit reached");
    }
    Ok(st)
}

/// Handle one text message.
pub(crate) fn handle(st: &mut State, host: &mut dyn Host, payload: &mut [u8], now: u64) {
    if !host.is_open() {
        return; // refused at `open` (client limit): nothing may follow the close frame
    }
    let v = match super::parse_json(payload) {
        Ok(v) => v,
        Err(e) => return reply_error(host, "INVALID_JSON", &format!("Invalid JSON message: {e}"), now),
    };
    if let Err(Refusal(code, msg)) = dispatch(st, host, &v, now) {
        reply_error(host, code, &msg, now);
    }
}

fn dispatch(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), Refusal> {
    if v.as_object().is_none() {
        return Err(Refusal("INVALID_MESSAGE", "a message must be a JSON object with an `action`".into()));
    }
    // The real server also takes `type` for `action`.
    let action = match v.get("action").or_else(|| v.get("type")) {
        None => return Err(Refusal("INVALID_ACTION", format!("missing field `action` (one of {ACTIONS})"))),
        Some(a) => a.as_str().ok_or_else(|| Refusal("INVALID_ACTION", "field `action` must be a string".into()))?,
    };
    let authed = st.authed;
    match action {
        "authenticate" | "auth" => {
            authenticate(st, host, v, now);
            Ok(())
        }
        "ping" => {
            pong(host, v, now);
            Ok(())
        }
        "subscribe" | "unsubscribe" | "unsubscribe_all" | "get_broker_info" | "get_supported_brokers" if !authed => {
            Err(Refusal("NOT_AUTHENTICATED", "You must authenticate first".into()))
        }
        "subscribe" => subscribe(host, v, now),
        "unsubscribe" => unsubscribe(host, v, false, now),
        "unsubscribe_all" => unsubscribe(host, v, true, now),
        "get_broker_info" => {
            let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
            let reply = json!({"type": "broker_info", "status": "success", "broker": BROKER,
                "adapter_status": "connected", "user_id": user});
            send(host, &reply, now);
            Ok(())
        }
        "get_supported_brokers" => {
            let reply = json!({"type": "supported_brokers", "status": "success", "brokers": [BROKER], "count": 1});
            send(host, &reply, now);
            Ok(())
        }
        other => Err(Refusal(
            "INVALID_ACTION",
            format!("Invalid action: {} (expected one of {ACTIONS})", clip(other)),
        )),
    }
}

// ── authentication ─────────────────────────────────────────────────────

/// `authenticate`: the key is checked like an upgrade's (`Host::authenticate`:
/// hashed lookup, subscribe role, the user's connection limit).
fn authenticate(st: &mut State, host: &mut dyn Host, v: &BorrowedValue, now: u64) {
    let key = match v.get("api_key").or_else(|| v.get("apikey")) {
        None => None,
        Some(k) => match k.as_str() {
            Some(k) if !k.is_empty() => Some(k),
            Some(_) => None,
            None => return refuse_auth(st, host, "field `api_key` must be a string", now),
        },
    };
    let Some(key) = key else {
        return refuse_auth(st, host, "API key is required", now);
    };
    if let Some(user) = host.user().map(|u| u.id.to_string()) {
        // Authenticated already (by an earlier message or the upgrade's
        // key): the same user's key is acknowledged again, without taking
        // another connection slot.
        match host.same_user(key) {
            Ok(true) => return auth_ok(st, host, &user, now),
            Ok(false) => return refuse_auth(st, host, "this connection is authenticated as another user", now),
            Err(()) => return refuse_auth(st, host, "Invalid API key", now),
        }
    }
    match host.authenticate(key) {
        Ok(()) => {
            let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
            auth_ok(st, host, &user, now);
        }
        Err((status, why)) => {
            // `Host::authenticate` counted it (auth_failures or limit_rejections).
            let msg = if status == 401 && why.starts_with("invalid") { "Invalid API key" } else { why.trim_end() };
            // A user at its connection limit gave a valid key: not a guess.
            auth_error(st, host, msg, status == 401, now);
        }
    }
}

fn auth_ok(st: &mut State, host: &mut dyn Host, user: &str, now: u64) {
    st.authed = true;
    st.auth_failures = 0;
    const OK: &str = "Authentication successful";
    let market_open = host.market_open();
    let auth = json!({"type": "auth", "status": "success", "message": OK, "broker": BROKER, "user_id": user,
        "supported_features": {"ltp": true, "quote": true, "depth": true}, "market_open": market_open});
    send(host, &auth, now);
    send(host, &json!({"type": "auth_response", "status": "success", "message": OK}), now);
}

/// Refuse an `authenticate` this module judged itself (counted here).
fn refuse_auth(st: &mut State, host: &mut dyn Host, msg: &str, now: u64) {
    host.count(Count::AuthFailure);
    auth_error(st, host, msg, true, now);
}

/// The seed's `auth_response` error and the real server's error frame.
/// After `MAX_AUTH_FAILURES` refused keys in a row (`guess`: a wrong or
/// missing key) the connection is closed (1008).
fn auth_error(st: &mut State, host: &mut dyn Host, msg: &str, guess: bool, now: u64) {
    log::info!("OpenAlgo client refused: {msg}");
    send(host, &json!({"type": "auth_response", "status": "error", "message": msg}), now);
    send(host, &error_frame("AUTHENTICATION_ERROR", msg), now);
    st.auth_failures = st.auth_failures.saturating_add(u8::from(guess));
    if st.auth_failures >= MAX_AUTH_FAILURES {
        host.close(close::POLICY, "too many failed authentication attempts");
    }
}

fn pong(host: &mut dyn Host, v: &BorrowedValue, now: u64) {
    let mut reply = json!({"type": "pong", "status": "success", "server_timestamp": now / 1_000_000});
    // Echoed for the client's latency measurement, as the real server does.
    if let Some(ts) = v.get("timestamp") {
        reply["client_timestamp"] = owned(ts);
    }
    if let Some(ping_id) = v.get("_pingId") {
        reply["_pingId"] = owned(ping_id);
    }
    send(host, &reply, now);
}

// ── subscriptions ──────────────────────────────────────────────────────

/// The mode names OpenAlgo replies with.
fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Ltp => "LTP",
        Mode::Quote => "Quote",
        Mode::Depth => "Depth",
    }
}

/// `1`/`2`/`3` or `"LTP"`/`"Quote"`/`"Depth"` (any case).
fn parse_mode(m: &BorrowedValue) -> Result<Mode, Refusal> {
    let by_name = |s: &str| Mode::ALL.into_iter().find(|&m| s.trim().eq_ignore_ascii_case(mode_name(m)));
    let mode = match (m.as_bool(), m.as_u64(), m.as_str()) {
        (None, Some(n @ 1..=3), _) => Some(Mode::ALL[n as usize - 1]),
        (None, _, Some(s)) => by_name(s),
        _ => None,
    };
    mode.ok_or_else(|| {
        let shown = clip(&simd_json::to_string(m).unwrap_or_default());
        Refusal("INVALID_MODE", format!("Invalid mode {shown}; expected 1 (LTP), 2 (Quote) or 3 (Depth), or the name"))
    })
}

/// The modes of `id`'s subscription to `slot` (0: none).
fn modes_of(host: &dyn Host, slot: Slot) -> u8 {
    match host.subscription(slot).map(|(enc, _)| enc.format) {
        Some(Format::OpenAlgo(bits)) => bits,
        _ => 0,
    }
}

/// The encoding and delivery of a subscription to `modes`: LTP alone is
/// rate-capped (the seed's 50 ms throttle); Quote and Depth are not.
fn encoding(host: &dyn Host, modes: u8) -> (Encoding, Delivery) {
    let mode = Mode::ALL.into_iter().rev().find(|&m| modes & openalgo_mode::bit(m) != 0).unwrap_or(Mode::Ltp);
    let delivery = if modes == openalgo_mode::LTP {
        Delivery::MaxRate { interval_ns: LTP_INTERVAL_NS }
    } else {
        host.default_delivery()
    };
    (Encoding { format: Format::OpenAlgo(modes), mode }, delivery)
}

/// One instrument named by a request, as the client spelled it.
struct Named<'v> {
    symbol: &'v str,
    exchange: &'v str,
    /// Its own `mode` (unsubscribe entries may carry one).
    mode: Option<Mode>,
}

/// The instruments of a request: the seed's `symbols` list, or the SDK's
/// single `symbol` + `exchange`.
fn named<'v>(host: &dyn Host, v: &'v BorrowedValue) -> Result<Vec<Named<'v>>, Refusal> {
    const SHAPE: &str = "field `symbols` must be an array of {\"symbol\": string, \"exchange\": string} objects";
    let field = |o: &'v BorrowedValue, k: &str| -> Result<&'v str, Refusal> {
        match o.get(k) {
            None => Err(invalid(format!("every instrument needs `symbol` and `exchange` (missing `{k}`)"))),
            Some(s) => s
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("field `{k}` must be a non-empty string"))),
        }
    };
    let mut out = Vec::new();
    match v.get("symbols") {
        Some(list) => {
            let arr = list.as_array().ok_or_else(|| invalid(SHAPE))?;
            for e in arr {
                if e.as_object().is_none() {
                    return Err(invalid(SHAPE));
                }
                let mode = e.get("mode").map(parse_mode).transpose()?;
                out.push(Named { symbol: field(e, "symbol")?, exchange: field(e, "exchange")?, mode });
            }
        }
        None if v.get("symbol").is_some() || v.get("exchange").is_some() => {
            out.push(Named { symbol: field(v, "symbol")?, exchange: field(v, "exchange")?, mode: None });
        }
        None => {}
    }
    let limit = host.config().max_subscriptions.max(1000);
    if out.len() > limit {
        return Err(invalid(format!("{} instruments in one request; at most {limit}", out.len())));
    }
    Ok(out)
}

/// The instrument `symbol` on `exchange` (any case). Indices are on
/// `NSE_INDEX` (OpenAlgo's name for the index segment), everything else
/// on its exchange.
fn resolve(reg: &Registry, n: &Named) -> Result<Slot, String> {
    let short = clip;
    let exch = n.exchange.to_ascii_uppercase();
    let (base, index) = match exch.strip_suffix("_INDEX") {
        Some(base) => (base, true),
        None => (exch.as_str(), false),
    };
    let unknown = || format!("unknown symbol {}:{}", short(n.exchange), short(n.symbol));
    if n.symbol.contains(':') || base.contains(':') {
        return Err(unknown());
    }
    let slot = reg.slot_of_symbol(&format!("{base}:{}", n.symbol)).ok_or_else(unknown)?;
    let ins = reg.get(slot);
    match (index, ins.isin.is_empty()) {
        (true, false) => Err(format!("{} is not an index: subscribe on exchange {}", ins.symbol, ins.exchange)),
        (false, true) => Err(format!("{} is an index: subscribe on exchange {}_INDEX", ins.symbol, ins.exchange)),
        _ => Ok(slot),
    }
}

/// `{"symbol","exchange"}` of a slot, spelled as its frames spell it.
fn canonical(reg: &Registry, slot: Slot) -> Value {
    let ins = reg.get(slot);
    let exchange = if ins.isin.is_empty() { format!("{}_INDEX", ins.exchange) } else { ins.exchange.to_string() };
    json!({"symbol": &*ins.symbol, "exchange": exchange})
}

/// `{"symbol","exchange","status":"error","message"}` as the client spelled it.
fn failed(n: &Named, msg: String) -> Value {
    json!({"symbol": clip(n.symbol), "exchange": clip(n.exchange), "status": "error", "message": msg})
}

fn subscribe(host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), Refusal> {
    let mode = v.get("mode").map(parse_mode).transpose()?.unwrap_or(Mode::Quote);
    let depth = match v.get("depth") {
        None => DEPTH_LEVELS,
        Some(d) => d
            .as_u64()
            .filter(|d| (1..=50).contains(d))
            .ok_or_else(|| invalid("field `depth` must be an integer from 1 to 50 (levels per side)"))?
            .min(DEPTH_LEVELS as u64) as usize,
    };
    let list = named(host, v)?;
    if list.is_empty() {
        return Err(invalid("At least one symbol must be specified (`symbols` list, or `symbol` and `exchange`)"));
    }
    let mut results = Vec::with_capacity(list.len());
    let mut ok = 0;
    for n in &list {
        let slot = match resolve(host.registry(), n) {
            Ok(slot) => slot,
            Err(msg) => {
                results.push(failed(n, msg));
                continue;
            }
        };
        let before = modes_of(host, slot);
        let after = before | openalgo_mode::bit(mode);
        let (enc, delivery) = encoding(host, after);
        match host.subscribe(slot, enc, delivery, now) {
            Ok(()) => {
                if before != 0 && after != before {
                    snapshot(host, slot, after & !before, now);
                }
                let mut e = canonical(host.registry(), slot);
                e["status"] = json!("success");
                e["mode"] = json!(mode_name(mode));
                e["depth"] = json!(depth);
                results.push(e);
                ok += 1;
            }
            Err(why) => {
                let msg = format!("{why} ({} per connection)", host.config().max_subscriptions);
                results.push(failed(n, msg));
            }
        }
    }
    let status = status_of(ok, results.len() - ok);
    let reply = json!({"type": "subscribe", "status": status, "subscriptions": results,
        "message": "Subscription processing complete", "broker": BROKER});
    send(host, &reply, now);
    Ok(())
}

/// The cached last value in the modes just added to a subscription (a new
/// subscription gets its snapshot from `Host::subscribe`).
fn snapshot(host: &mut dyn Host, slot: Slot, modes: u8, now: u64) {
    let Some(t) = host.last_value(slot) else { return };
    if host.congested() {
        return; // its next delivery carries the newest value
    }
    let mut buf = Vec::new();
    let enc = Encoding { format: Format::OpenAlgo(modes), mode: Mode::Ltp };
    let r = crate::encode::encode(&mut buf, enc, &t, host.registry().get(slot), Marks { snapshot: true, conflated: false });
    host.data_frame(&buf[r], now);
}

fn status_of(ok: usize, failed: usize) -> &'static str {
    match (ok, failed) {
        (_, 0) => "success",
        (0, _) => "error",
        _ => "partial",
    }
}

/// `unsubscribe` (the instruments named, in the mode named per entry or
/// for the request, else every mode) or `unsubscribe_all`.
fn unsubscribe(host: &mut dyn Host, v: &BorrowedValue, all: bool, now: u64) -> Result<(), Refusal> {
    let (mut done, mut failures) = (Vec::new(), Vec::new());
    if all {
        for slot in host.slots().to_vec() {
            if host.unsubscribe(slot) {
                let mut e = canonical(host.registry(), slot);
                e["status"] = json!("success");
                done.push(e);
            }
        }
    } else {
        let mode = v.get("mode").map(parse_mode).transpose()?;
        let list = named(host, v)?;
        if list.is_empty() {
            return Err(invalid("Either symbols or unsubscribe_all is required"));
        }
        for n in &list {
            let slot = match resolve(host.registry(), n) {
                Ok(slot) => slot,
                Err(msg) => {
                    failures.push(failed(n, msg));
                    continue;
                }
            };
            let mode = n.mode.or(mode);
            let remove =
                mode.map_or(openalgo_mode::LTP | openalgo_mode::QUOTE | openalgo_mode::DEPTH, openalgo_mode::bit);
            let before = modes_of(host, slot);
            if before & remove == 0 {
                let msg = match mode {
                    Some(m) => format!("not subscribed in {} mode", mode_name(m)),
                    None => "not subscribed".to_string(),
                };
                failures.push(failed(n, msg));
                continue;
            }
            let after = before & !remove;
            if after == 0 {
                host.unsubscribe(slot);
            } else {
                let (enc, delivery) = encoding(host, after);
                // An update in place: it cannot hit a limit.
                let _ = host.subscribe(slot, enc, delivery, now);
            }
            let mut e = canonical(host.registry(), slot);
            e["status"] = json!("success");
            if let Some(m) = mode {
                e["mode"] = json!(mode_name(m));
            }
            done.push(e);
        }
    }
    let status = status_of(done.len(), failures.len());
    let reply = json!({"type": "unsubscribe", "status": status, "message": "Unsubscription processing complete",
        "successful": done, "failed": failures, "broker": BROKER});
    send(host, &reply, now);
    Ok(())
}

// ── replies, keepalive ─────────────────────────────────────────────────

/// A simd-json value as a serde_json one (for echoes).
fn owned(v: &BorrowedValue) -> Value {
    serde_json::from_str(&simd_json::to_string(v).unwrap_or_default()).unwrap_or(Value::Null)
}

fn send(host: &mut dyn Host, v: &Value, now: u64) {
    host.reply(v.to_string().as_bytes(), now);
}

/// The real server's error shape, with a `type` so clients that dispatch
/// on it see errors too.
fn error_frame(code: &str, message: &str) -> Value {
    json!({"type": "error", "status": "error", "code": code, "message": message})
}

/// Send an error frame (counted as a bad request); the connection stays open.
pub(crate) fn reply_error(host: &mut dyn Host, code: &str, message: &str, now: u64) {
    host.bad_request(&format!("{code}: {message}"));
    send(host, &error_frame(code, message), now);
}

/// `{"type":"market_status","market_open":…,"timestamp":…}` on each transition.
pub(crate) fn market_status(open: bool, now: u64) -> Vec<u8> {
    // The SDK ignores message types it does not know, so the notice is safe.
    let ts = crate::encode::dialects::iso_string(now);
    json!({"type": "market_status", "market_open": open, "timestamp": ts}).to_string().into_bytes()
}

/// Keepalive and the authentication deadline: ping every
/// `ping_interval`; close a client whose ping stays unanswered past
/// `ping_timeout` (1011), or that has not authenticated within
/// `auth_timeout` (1008).
pub(crate) fn housekeeping(st: &mut State, host: &mut dyn Host, now: u64) {
    let cfg = &host.config().openalgo;
    let ns = crate::tick::ns;
    let (interval, timeout, auth) = (ns(cfg.ping_interval), ns(cfg.ping_timeout), ns(cfg.auth_timeout));
    if !st.authed && now.saturating_sub(st.opened_ns) > auth {
        return host.close(close::POLICY, "not authenticated in time: send {\"action\":\"authenticate\",\"api_key\":…} first");
    }
    if st.ping_outstanding_ns != 0 && host.last_pong_ns() >= st.ping_outstanding_ns {
        st.ping_outstanding_ns = 0;
    }
    if st.ping_outstanding_ns != 0 {
        if now.saturating_sub(st.ping_outstanding_ns) > timeout {
            host.close(KEEPALIVE_TIMEOUT, "keepalive ping timeout");
        }
        return;
    }
    if now.saturating_sub(st.last_ping_ns) >= interval {
        st.last_ping_ns = now;
        st.ping_outstanding_ns = now;
        host.control_frame(OP_PING, b"tickcast", now);
    }
}
