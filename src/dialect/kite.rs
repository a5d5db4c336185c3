//! Kite Connect v3's ticker (`/kite` on the main port, `/` on
//! `--kite-listen`): what `KiteTicker(api_key, access_token,
//! root="ws://HOST:PORT/kite")` from the official `kiteconnect` package
//! speaks, unchanged.
//!
//! ```json
//! {"a":"subscribe","v":[738561,256265]}       (mode quote, as Kite)
//! {"a":"mode","v":["full",[738561]]}          (ltp | quote | full)
//! {"a":"unsubscribe","v":[256265]}
//! ```
//! Market data are binary frames of Kite packets (`crate::kite`): every
//! packet queued to a connection in one turn shares one frame. An idle
//! connection gets Kite's 1-byte heartbeat every second. Text messages are
//! Kite's: `{"type":"error","data":"…"}`, and `{"type":"order","data":{…}}`
//! relaying the user's `private:<user>:orders` channel (a Kite upstream
//! publishes its order postbacks there).
//!
//! Tokens are Kite instrument tokens (`exchange_token × 256 + segment`; a
//! Kite `instruments.csv` master's own). Auth: `access_token` is the API
//! key and `api_key` must name its user; a wrong pair is refused with 403
//! at the handshake, as Kite refuses it.

use serde_json::json;
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use super::{clip, ChanKind, Count, Dialect, Host};
use crate::encode::{Encoding, Format};
use crate::tick::Mode;
use crate::ws::handshake::Request;

/// Kite's heartbeat: a binary frame with one byte.
pub const HEARTBEAT: [u8; 3] = [0x82, 1, 0];
/// An idle connection gets a heartbeat this often.
const HEARTBEAT_NS: u64 = 1_000_000_000;
/// Most tokens in one request (bounds the work and the reply).
const MAX_TOKENS: usize = 10_000;
/// The order channel's messages, wrapped as Kite wraps a postback.
pub const ORDER_ENVELOPE: ChanKind = ChanKind::Enveloped { before: br#"{"type":"order","data":"#, after: b"}" };

/// A refused handshake: the HTTP status and body.
pub type Refusal = (u16, String);

/// Authenticate (403 as Kite answers a bad pair), answer the upgrade, join
/// the user's order channel when a source publishes channels.
///
/// # Errors
/// The status and body to answer instead of the upgrade.
pub(crate) fn open(host: &mut dyn Host, req: &Request) -> Result<(), Refusal> {
    let token = req.param("access_token").unwrap_or_default();
    if let Err((_, why)) = host.authenticate(&token) {
        return Err((403, format!("Kite auth refused: {}", why.trim_end())));
    }
    let user = host.user().map(|u| u.id.to_string()).unwrap_or_default();
    if host.config().auth_file.is_some() && req.param("api_key").as_deref() != Some(user.as_str()) {
        host.count(Count::AuthFailure);
        return Err((403, "Kite auth refused: api_key does not name the access token's user".into()));
    }
    host.accept(req, Dialect::Kite).map_err(|why| (503, why))?;
    if host.has_channel_source() && !user.is_empty() {
        // A user's own private channel: refused only at a limit, which the
        // client then learns of.
        if let Err(why) = host.join_channel(&format!("private:{user}:orders"), ORDER_ENVELOPE) {
            reply_error(host, &format!("order updates are off: {why}"), 0);
        }
    }
    Ok(())
}

/// One request.
pub(crate) fn handle(host: &mut dyn Host, payload: &mut [u8], now: u64) {
    super::handle_json(host, payload, now, dispatch, reply_error);
}

fn dispatch(host: &mut dyn Host, v: &BorrowedValue, now: u64) -> Result<(), String> {
    if v.as_object().is_none() {
        return Err(r#"a request must be a JSON object like {"a":"subscribe","v":[738561]}"#.into());
    }
    let action = match v.get("a") {
        None => return Err("missing field `a` (subscribe, unsubscribe or mode)".into()),
        Some(a) => a.as_str().ok_or("field `a` must be a string")?,
    };
    let value = v.get("v").ok_or("missing field `v`")?;
    match action {
        "subscribe" => change(host, tokens(value)?, Some(Mode::Quote), false, now),
        "unsubscribe" => change(host, tokens(value)?, None, false, now),
        "mode" => {
            let pair = value
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or(r#"`v` of mode must be [mode, [tokens]], like ["full",[738561]]"#)?;
            let name = pair[0].as_str().ok_or("the mode must be a string: ltp, quote or full")?;
            let mode = crate::kite::parse_mode(name)
                .ok_or_else(|| format!("unknown mode `{}` (ltp, quote or full)", clip(name)))?;
            change(host, tokens(&pair[1])?, Some(mode), true, now)
        }
        other => Err(format!("unknown action `{}` (subscribe, unsubscribe or mode)", clip(other))),
    }
}

/// The token list of a request: integers (or numeric strings).
fn tokens(v: &BorrowedValue) -> Result<Vec<u32>, String> {
    let arr = v.as_array().ok_or("the tokens must be an array of instrument tokens")?;
    if arr.len() > MAX_TOKENS {
        return Err(format!("{} tokens in one request; at most {MAX_TOKENS}", arr.len()));
    }
    arr.iter()
        .map(|t| {
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`{}` is not an instrument token", clip(&t.to_string())))
        })
        .collect()
}

/// Subscribe `tokens` in `mode` (`None`: unsubscribe). `set_mode`: a mode
/// request, which snapshots the instruments whose mode it raised (a new
/// subscription gets its snapshot from the host either way). Unknown
/// tokens and refusals are told in one error message; the rest applies.
fn change(host: &mut dyn Host, tokens: Vec<u32>, mode: Option<Mode>, set_mode: bool, now: u64) -> Result<(), String> {
    let limit = host.config().kite_max_instruments;
    let delivery = host.default_delivery();
    let (mut unknown, mut refused) = (Vec::new(), Vec::new());
    for token in tokens {
        let Some(slot) = host.registry().slot_of_kite_token(token) else {
            unknown.push(token);
            continue;
        };
        let Some(mode) = mode else {
            host.unsubscribe(slot);
            continue;
        };
        let before = host.subscription(slot).map(|(enc, _)| enc.mode);
        if before.is_none() && host.slots().len() >= limit {
            refused.push((token, format!("at most {limit} instruments per connection")));
            continue;
        }
        let enc = Encoding { format: Format::Kite, mode };
        match host.subscribe(slot, enc, delivery, now) {
            Ok(()) if set_mode && before.is_some_and(|m| (m as u8) < (mode as u8)) => host.snapshot(slot, enc, now),
            Ok(()) => {}
            Err(why) => refused.push((token, why.to_string())),
        }
    }
    let mut msg = Vec::new();
    if !unknown.is_empty() {
        msg.push(format!("invalid instrument tokens: {}", list(&unknown)));
    }
    if let Some((_, why)) = refused.first() {
        let tokens: Vec<u32> = refused.iter().map(|(t, _)| *t).collect();
        msg.push(format!("not subscribed: {} ({why})", list(&tokens)));
    }
    if msg.is_empty() {
        Ok(())
    } else {
        Err(msg.join("; "))
    }
}

/// At most 20 tokens, comma-separated, with how many more.
fn list(tokens: &[u32]) -> String {
    let shown: Vec<String> = tokens.iter().take(20).map(u32::to_string).collect();
    match tokens.len() {
        n if n > 20 => format!("{} and {} more", shown.join(", "), n - 20),
        _ => shown.join(", "),
    }
}

/// `{"type":"error","data":msg}`, counted; the connection stays.
pub(crate) fn reply_error(host: &mut dyn Host, msg: &str, now: u64) {
    host.bad_request(msg);
    super::reply_json(host, &json!({"type": "error", "data": msg}), now);
}

/// `{"type":"message","data":…}`: the market opened or closed.
pub(crate) fn market_status(open: bool) -> Vec<u8> {
    let text = if open { "market open" } else { "market closed" };
    json!({"type": "message", "data": text}).to_string().into_bytes()
}

/// Kite's heartbeat on a connection idle for a second.
pub(crate) fn housekeeping(host: &mut dyn Host, now: u64) {
    if host.idle_ns(now) >= HEARTBEAT_NS && host.is_open() && !host.congested() {
        host.data_frame(&HEARTBEAT, now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::pair::{too_deep, Action, Pair};
    use super::super::{Dialect, Host};
    use super::*;
    use crate::instrument::Slot;

    /// The connection's subscriptions and their modes, in order.
    fn subscribed(host: &Pair) -> Vec<(Slot, Mode)> {
        host.slots.iter().map(|&s| (s, host.subscription(s).expect("subscribed").0.mode)).collect()
    }

    fn open(p: &mut Pair, query: &str) {
        p.open(&format!("/kite{query}"), Dialect::Kite).unwrap();
        p.take();
    }

    /// pykiteconnect's session: subscribe (quote), set_mode full, ltp,
    /// unsubscribe; replies nothing on success, as Kite.
    #[test]
    fn the_clients_session() {
        let mut p = Pair::new();
        open(&mut p, "?api_key=k&access_token=t");
        let (reliance, nifty) = (p.slot(2885), p.slot(26000));
        p.value(2885, 7, 285050);
        p.send(r#"{"a":"subscribe","v":[738561,6656009]}"#);
        assert!(p.replies().is_empty());
        assert_eq!(subscribed(&p), [(reliance, Mode::Quote), (nifty, Mode::Quote)]);
        p.send(r#"{"a":"mode","v":["full",[738561]]}"#);
        let acts = p.take();
        let full = Encoding { format: Format::Kite, mode: Mode::Depth };
        assert!(acts.contains(&Action::Subscribe(reliance, full, p.default_delivery())), "{acts:?}");
        let full_packet = |a: &Action| matches!(a, Action::Data(d) if d.len() == 2 + crate::kite::FULL_LEN);
        assert!(acts.iter().any(full_packet), "a raised mode sends the newest value: {acts:?}");
        p.send(r#"{"a":"mode","v":["ltp",[738561]]}"#);
        assert!(!p.take().iter().any(|a| matches!(a, Action::Data(_))), "a lowered mode waits for the next tick");
        p.send(r#"{"a":"subscribe","v":[738561]}"#);
        assert_eq!(subscribed(&p)[0], (reliance, Mode::Quote), "subscribe resets to quote, as the client assumes");
        p.send(r#"{"a":"unsubscribe","v":[738561]}"#);
        assert_eq!(subscribed(&p), [(nifty, Mode::Quote)]);
        // A mode for a token not subscribed subscribes it (the client
        // counts it as subscribed and resubscribes it after a reconnect).
        p.send(r#"{"a":"mode","v":["ltp",["738561"]]}"#);
        assert_eq!(subscribed(&p)[1], (reliance, Mode::Ltp));
        assert!(p.replies().is_empty());
    }

    /// Unknown tokens are told (Kite's error message), known ones still apply.
    #[test]
    fn unknown_tokens_get_an_error_message() {
        let mut p = Pair::new();
        open(&mut p, "");
        p.send(r#"{"a":"subscribe","v":[2885,738561,1]}"#);
        let acts = p.take();
        let [.., Action::BadRequest(_), Action::Reply(r)] = &acts[..] else { panic!("counted, then told: {acts:?}") };
        let r: serde_json::Value = serde_json::from_str(r).unwrap();
        assert_eq!(r, json!({"type": "error", "data": "invalid instrument tokens: 2885, 1"}));
        assert_eq!(p.slots.len(), 1, "RELIANCE subscribed");
    }

    #[test]
    fn the_per_connection_limit_refuses_the_rest() {
        let mut p = Pair::new();
        p.config.kite_max_instruments = 2;
        open(&mut p, "");
        p.send(r#"{"a":"subscribe","v":[738561,2953217,408065]}"#);
        let r = p.replies();
        assert_eq!(r[0]["type"], "error");
        assert_eq!(r[0]["data"], "not subscribed: 408065 (at most 2 instruments per connection)");
        assert_eq!(p.slots.len(), 2);
        p.send(r#"{"a":"mode","v":["full",[738561]]}"#);
        assert!(p.replies().is_empty(), "a mode change of a subscribed one is no new instrument");
    }

    #[test]
    fn bad_requests() {
        let cases = [
            ("not json", "malformed JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"v":[1]}"#, "missing field `a`"),
            (r#"{"a":1,"v":[1]}"#, "`a` must be a string"),
            (r#"{"a":"subscribe"}"#, "missing field `v`"),
            (r#"{"a":"subscribe","v":738561}"#, "must be an array"),
            (r#"{"a":"subscribe","v":[true]}"#, "`true` is not an instrument token"),
            (r#"{"a":"subscribe","v":[-1]}"#, "`-1` is not an instrument token"),
            (r#"{"a":"subscribe","v":[4294967296]}"#, "not an instrument token"),
            (r#"{"a":"mode","v":["full"]}"#, "[mode, [tokens]]"),
            (r#"{"a":"mode","v":[1,[738561]]}"#, "mode must be a string"),
            (r#"{"a":"mode","v":["depth",[738561]]}"#, "unknown mode `depth`"),
            (r#"{"a":"dance","v":[]}"#, "unknown action `dance`"),
            (&too_deep(), "nested deeper"),
        ];
        for (request, want) in cases {
            let mut p = Pair::new();
            open(&mut p, "");
            let (_, r) = p.refuse(request);
            assert_eq!(r["type"], "error", "{request}");
            let msg = r["data"].as_str().unwrap();
            assert!(msg.contains(want), "{request}: {msg}");
            assert!(p.open && p.slots.is_empty(), "{request}");
        }
        let mut p = Pair::new();
        open(&mut p, "");
        let many: Vec<u32> = (0..10_001).collect();
        p.send(&json!({"a": "subscribe", "v": many}).to_string());
        assert!(p.replies()[0]["data"].as_str().unwrap().contains("at most 10000"));
    }

    /// With API keys: the token is the key and `api_key` must name its
    /// user; anything else is 403 and counted.
    #[test]
    fn auth_is_refused_with_403() {
        let key = "kite-secret-1";
        let auth = format!("[[user]]\nid = \"desk\"\nkeys = [\"{}\"]\n", crate::auth::hash_line(key));
        let cases = [
            (format!("?api_key=desk&access_token={key}"), None),
            (format!("?api_key=other&access_token={key}"), Some("does not name")),
            (format!("?access_token={key}"), Some("does not name")),
            ("?api_key=desk&access_token=wrong".to_string(), Some("invalid API key")),
            ("?api_key=desk".to_string(), Some("invalid API key")),
        ];
        for (query, refused) in cases {
            let mut p = Pair::with_auth(&auth);
            let got = p.open(&format!("/kite{query}"), Dialect::Kite);
            match refused {
                None => assert!(got.is_ok(), "{query}: {got:?}"),
                Some(why) => {
                    let (status, body) = got.unwrap_err();
                    assert_eq!(status, 403, "{query}");
                    assert!(body.contains(why), "{query}: {body}");
                    assert!(p.take().contains(&Action::Count(Count::AuthFailure)), "{query}: counted");
                }
            }
        }
    }

    /// The user's order channel is joined when a source publishes channels.
    #[test]
    fn order_updates_come_from_the_users_private_channel() {
        let mut p = Pair::new();
        p.channel_source = true;
        p.open("/kite", Dialect::Kite).unwrap();
        assert!(p.take().contains(&Action::Join("private:anonymous:orders".into(), ORDER_ENVELOPE)));
        let mut p = Pair::new();
        p.channel_source = false;
        p.open("/kite", Dialect::Kite).unwrap();
        assert!(!p.take().iter().any(|a| matches!(a, Action::Join(..))), "no source, no channel");
    }

    #[test]
    fn heartbeat_after_a_second_idle_and_binary_requests_are_errors() {
        let mut p = Pair::new();
        open(&mut p, "");
        p.last_tx_ns = p.now;
        assert_eq!(p.due_in(1000), [Action::Data(HEARTBEAT.to_vec())]);
        p.send_binary();
        assert_eq!(p.replies()[0]["type"], "error");
        let m: serde_json::Value = serde_json::from_slice(&market_status(false)).unwrap();
        assert_eq!(m, json!({"type": "message", "data": "market closed"}));
    }
}
