//! A [`Host`] for unit tests (quinn-proto's `Pair`, in spirit): the bundled
//! master, the default configuration, a clock the test moves, and a record
//! of everything the dialect asked for. A test feeds a dialect the seed's
//! example messages and compares its replies and actions with the seed's.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::{ChanKind, Count, Dialect, Host, Protocol};
use crate::auth::{Auth, User};
use crate::channel::{ChannelId, Channels};
use crate::config::Config;
use crate::encode::{Encoding, Format};
use crate::instrument::{Registry, Slot};
use crate::session::SavedSub;
use crate::subs::Delivery;
use crate::tick::Tick;
use crate::ws::frame::OP_TEXT;
use crate::ws::handshake::{self, Request};

/// What a dialect did, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Answered the upgrade as this dialect.
    Accept(Dialect),
    /// A text reply on the control lane.
    Reply(String),
    /// A WebSocket ping.
    Ping,
    /// A data frame, its bytes.
    Data(Vec<u8>),
    /// Closed with this code and reason.
    Close(u16, String),
    /// Subscribed (or changed) an instrument.
    Subscribe(Slot, Encoding, Delivery),
    /// Dropped an instrument.
    Unsubscribe(Slot),
    /// Joined a channel.
    Join(String, ChanKind),
    /// Left a channel.
    Leave(ChannelId),
    /// Started or stopped receiving every instrument.
    WatchAll(bool),
    /// A bad request was counted.
    BadRequest(String),
    /// A counter.
    Count(Count),
    /// The native heartbeat was queued.
    Heartbeat,
}

/// An action as a test compares it: a reply, or a data frame holding one
/// text frame, as JSON.
#[derive(Debug, PartialEq)]
pub(crate) enum Did {
    /// Any other action.
    Act(Action),
    /// A text reply.
    Reply(Value),
    /// A data frame, one text frame.
    Data(Value),
}

/// `acts` as [`Did`]s (a data frame that is not text stays an action).
pub(crate) fn did(acts: Vec<Action>) -> Vec<Did> {
    acts.into_iter()
        .map(|a| match a {
            Action::Reply(t) => Did::Reply(json(&t)),
            Action::Data(f) if f.first() == Some(&(0x80 | OP_TEXT)) => {
                let [v] = <[Value; 1]>::try_from(text_frames(&f)).expect("one text frame per data action");
                Did::Data(v)
            }
            a => Did::Act(a),
        })
        .collect()
}

/// The JSON payloads of whole, unmasked, final text frames written back
/// to back.
pub(crate) fn text_frames(mut b: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert_eq!(b[0], 0x80 | OP_TEXT, "a final text frame: {b:?}");
        let (len, head) = match b[1] {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => (usize::try_from(u64::from_be_bytes(b[2..10].try_into().unwrap())).unwrap(), 10),
            n if n < 126 => (usize::from(n), 2),
            _ => panic!("a masked server frame: {b:?}"),
        };
        assert!(b.len() >= head + len, "a whole frame: {b:?}");
        out.push(serde_json::from_slice(&b[head..head + len]).unwrap_or_else(|e| panic!("frame is not JSON: {e}")));
        b = &b[head + len..];
    }
    out
}

/// The test host, and the dialect it drives.
pub(crate) struct Pair {
    pub registry: Registry,
    pub config: Config,
    pub channels: Channels,
    pub auth: Auth,
    /// Last values by slot.
    pub values: HashMap<Slot, Tick>,
    pub market_open: bool,
    /// Whether named channels have a source (`has_channel_source`).
    pub channel_source: bool,
    /// The user's subscription limit, as a host shared by the user's
    /// connections enforces it: past this many instruments, `subscribe`
    /// fails with [`USER_LIMIT`].
    pub user_limit: usize,
    /// The test's clock, ns.
    pub now: u64,
    pub client_id: String,
    /// The client chose its id: its session is kept after a disconnect.
    pub resumable: bool,
    pub format: Format,
    pub slots: Vec<Slot>,
    pub subs: HashMap<Slot, (Encoding, Delivery)>,
    pub channel_ids: Vec<ChannelId>,
    pub user: Option<Arc<User>>,
    pub open: bool,
    pub congested: bool,
    pub drained: bool,
    pub last_tx_ns: u64,
    pub last_pong_ns: u64,
    /// What `restore` hands back, once.
    pub saved: Option<Vec<SavedSub>>,
    pub changed: Vec<Slot>,
    pub held: Option<Arc<[u8]>>,
    pub actions: Vec<Action>,
    /// The dialect under test, once opened.
    pub proto: Protocol,
}

impl Pair {
    /// The bundled master, default configuration, market open, 2026-01-05
    /// 09:15 IST, nothing subscribed.
    pub fn new() -> Pair {
        Pair {
            registry: Registry::bundled(),
            config: Config::default(),
            channels: Channels::new(64),
            auth: Auth::open(),
            values: HashMap::new(),
            market_open: true,
            channel_source: true,
            user_limit: usize::MAX,
            now: 1_767_584_700_000_000_000,
            client_id: String::new(),
            resumable: false,
            format: Format::Json,
            slots: Vec::new(),
            subs: HashMap::new(),
            channel_ids: Vec::new(),
            user: None,
            open: false,
            congested: false,
            drained: true,
            last_tx_ns: 0,
            last_pong_ns: 0,
            saved: None,
            changed: Vec::new(),
            held: None,
            actions: Vec::new(),
            proto: Protocol::None,
        }
    }

    /// The slot of `token` in the bundled master.
    pub fn slot(&self, token: u32) -> Slot {
        self.registry.slot_of_token(token).expect("a token of the bundled master")
    }

    /// Give `token` a last value with this `seq` and `ltp` (minor units).
    pub fn value(&mut self, token: u32, seq: u64, ltp: i64) -> Tick {
        let slot = self.slot(token);
        let t = Tick { token, slot: slot.0, seq, ltp, ts_ns: self.now, ..Tick::default() };
        self.values.insert(slot, t);
        t
    }

    /// Upgrade at `path_and_query` as `dialect` (as the worker would).
    ///
    /// # Errors
    /// The dialect refused the upgrade.
    pub fn open(&mut self, path_and_query: &str, dialect: Dialect) -> Result<(), (u16, String)> {
        let head = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let req: Request = match handshake::parse(head.as_bytes()) {
            handshake::Head::Complete(req, _) => req,
            other => panic!("test request did not parse: {other:?}"),
        };
        let now = self.now;
        self.proto = Protocol::open(self, &req, dialect, now)?;
        Ok(())
    }

    /// Run `f` on the dialect with this host, the dialect taken out for the
    /// call (as the worker does).
    fn drive(&mut self, f: impl FnOnce(&mut Protocol, &mut Pair, u64)) {
        let mut proto = std::mem::take(&mut self.proto);
        let now = self.now;
        f(&mut proto, self, now);
        self.proto = proto;
    }

    /// The client sends `text`.
    pub fn send(&mut self, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        self.drive(|proto, host, now| proto.text(host, &mut bytes, now));
    }

    /// Require API keys from the auth file `text` (as `--auth-file`).
    pub fn with_auth(text: &str) -> Pair {
        let mut p = Pair::new();
        p.auth = Auth::parse(text).expect("a valid auth file");
        p.config.auth_file = Some("auth.toml".into());
        p
    }

    /// The client sends a binary message.
    pub fn send_binary(&mut self) {
        self.drive(|proto, host, now| proto.binary(host, now));
    }

    /// `ms` pass, then the dialect's housekeeping runs.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms * 1_000_000;
        self.drive(|proto, host, now| proto.housekeeping(host, now));
    }

    /// `ms - 1` pass with nothing done (asserted), then one more: what is
    /// done at `ms` (taken).
    #[track_caller]
    pub fn due_in(&mut self, ms: u64) -> Vec<Action> {
        assert!(ms > 0, "due in 0 ms");
        self.advance(ms - 1);
        let early = self.take();
        assert_eq!(early, [], "nothing before {ms} ms");
        self.advance(1);
        self.take()
    }

    /// Data stays queued (not drained) while `ms` pass, and nothing is done
    /// (asserted); then it drains: what is done at once (taken).
    #[track_caller]
    pub fn drained_after(&mut self, ms: u64) -> Vec<Action> {
        self.drained = false;
        self.advance(ms);
        let early = self.take();
        assert_eq!(early, [], "nothing while data is still queued");
        self.drained = true;
        self.advance(0);
        self.take()
    }

    /// The actions so far (taken).
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// The text replies so far, as JSON (other actions dropped).
    pub fn replies(&mut self) -> Vec<Value> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Reply(t) => Some(json(&t)),
                _ => None,
            })
            .collect()
    }

    /// The actions so far (taken) must be a refusal: exactly a counted bad
    /// request, then one reply. The counted text, and the reply as JSON.
    #[track_caller]
    pub fn refusal(&mut self) -> (String, Value) {
        self.refusal_of("the last message")
    }

    /// The client sends `request`, which must be refused (see
    /// [`Pair::refusal`]): the counted text, and the reply as JSON.
    #[track_caller]
    pub fn refuse(&mut self, request: &str) -> (String, Value) {
        self.send(request);
        self.refusal_of(request)
    }

    #[track_caller]
    fn refusal_of(&mut self, what: &str) -> (String, Value) {
        let acts = self.take();
        let [Action::BadRequest(counted), Action::Reply(reply)] = &acts[..] else {
            panic!("{what:.80}: not a bad request then its reply: {acts:?}")
        };
        (counted.clone(), json(reply))
    }
}

/// What `subscribe` answers past [`Pair::user_limit`].
const USER_LIMIT: &str = "the user's subscription limit is reached";

/// A JSON text nested deeper than any dialect reads (200 arrays).
pub(crate) fn too_deep() -> String {
    format!("{}1{}", "[".repeat(200), "]".repeat(200))
}

/// `text` as JSON; a test failure if it is not.
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("reply is not JSON: {text}: {e}"))
}

impl Host for Pair {
    fn registry(&self) -> &Registry {
        &self.registry
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn channels(&self) -> &Channels {
        &self.channels
    }
    fn last_value(&self, slot: Slot) -> Option<Tick> {
        self.values.get(&slot).copied()
    }
    fn market_open(&self) -> bool {
        self.market_open
    }
    fn default_delivery(&self) -> Delivery {
        Delivery::Conflate
    }
    fn has_channel_source(&self) -> bool {
        self.channel_source
    }
    fn open_connections(&self, _dialect: Dialect) -> u64 {
        u64::from(self.open)
    }
    fn client_id(&self) -> &str {
        &self.client_id
    }
    fn set_client_id(&mut self, id: String, resumable: bool) {
        self.client_id = id;
        self.resumable = resumable;
    }
    fn format(&self) -> Format {
        self.format
    }
    fn set_format(&mut self, format: Format) {
        self.format = format;
    }
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
    fn subscription(&self, slot: Slot) -> Option<(Encoding, Delivery)> {
        self.subs.get(&slot).copied()
    }
    fn channel_ids(&self) -> &[ChannelId] {
        &self.channel_ids
    }
    fn user(&self) -> Option<&Arc<User>> {
        self.user.as_ref()
    }
    fn idle_ns(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_tx_ns)
    }
    fn drained(&self) -> bool {
        self.drained
    }
    fn congested(&self) -> bool {
        self.congested
    }
    fn last_pong_ns(&self) -> u64 {
        self.last_pong_ns
    }
    fn is_open(&self) -> bool {
        self.open
    }
    fn accept(&mut self, _req: &Request, dialect: Dialect) -> Result<(), String> {
        self.open = true;
        self.actions.push(Action::Accept(dialect));
        Ok(())
    }
    fn reply(&mut self, text: &[u8], now: u64) {
        self.last_tx_ns = now;
        self.actions.push(Action::Reply(String::from_utf8(text.to_vec()).expect("replies are UTF-8")));
    }
    fn ping(&mut self, _payload: &[u8], now: u64) {
        self.last_tx_ns = now;
        self.actions.push(Action::Ping);
    }
    fn data_frame(&mut self, frame: &[u8], now: u64) {
        self.last_tx_ns = now;
        self.actions.push(Action::Data(frame.to_vec()));
    }
    fn snapshot(&mut self, slot: Slot, enc: Encoding, now: u64) {
        let Some(t) = self.values.get(&slot).copied() else { return };
        if self.congested {
            return;
        }
        let mut buf = Vec::new();
        let marks = crate::encode::Marks { snapshot: true, conflated: false };
        let r = crate::encode::encode(&mut buf, enc, &t, self.registry.get(slot), marks);
        if !r.is_empty() {
            self.data_frame(&buf[r], now);
        }
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.open = false;
        self.actions.push(Action::Close(code, reason.to_string()));
    }
    fn subscribe(&mut self, slot: Slot, enc: Encoding, delivery: Delivery, _now: u64) -> Result<(), &'static str> {
        let known = self.subs.contains_key(&slot);
        if !known && self.slots.len() >= self.user_limit {
            return Err(USER_LIMIT);
        }
        if !known && self.slots.len() + self.channel_ids.len() >= self.config.max_subscriptions {
            return Err("subscription limit reached");
        }
        if !known {
            self.slots.push(slot);
        }
        self.subs.insert(slot, (enc, delivery));
        self.actions.push(Action::Subscribe(slot, enc, delivery));
        Ok(())
    }
    fn unsubscribe(&mut self, slot: Slot) -> bool {
        if self.subs.remove(&slot).is_none() {
            return false;
        }
        self.slots.retain(|&s| s != slot);
        self.actions.push(Action::Unsubscribe(slot));
        true
    }
    fn watch_all(&mut self) -> bool {
        self.actions.push(Action::WatchAll(true));
        self.changed = self.values.keys().copied().collect();
        self.changed.sort();
        true
    }
    fn unwatch_all(&mut self) -> bool {
        self.actions.push(Action::WatchAll(false));
        true
    }
    fn take_changed(&mut self, out: &mut Vec<Slot>) {
        *out = std::mem::take(&mut self.changed);
    }
    fn join_channel(&mut self, name: &str, kind: ChanKind) -> Result<bool, String> {
        let ch = self.channels.id(name).map_err(|e| e.message().to_string())?;
        if self.channel_ids.contains(&ch) {
            return Ok(false);
        }
        self.channel_ids.push(ch);
        self.actions.push(Action::Join(name.to_string(), kind));
        Ok(true)
    }
    fn leave_channel(&mut self, ch: ChannelId) -> bool {
        let had = self.channel_ids.contains(&ch);
        self.channel_ids.retain(|&c| c != ch);
        if had {
            self.actions.push(Action::Leave(ch));
        }
        had
    }
    fn take_held(&mut self) -> Option<Arc<[u8]>> {
        self.held.take()
    }
    fn restore(&mut self) -> Option<Vec<SavedSub>> {
        self.saved.take()
    }
    fn authenticate(&mut self, key: &str) -> Result<(), (u16, String)> {
        match self.auth.check(Some(key), crate::auth::role::SUBSCRIBE) {
            Ok(u) => {
                self.user = Some(u);
                Ok(())
            }
            Err(_) => {
                self.actions.push(Action::Count(Count::AuthFailure));
                Err((401, "invalid API key\n".into()))
            }
        }
    }
    fn same_user(&self, key: &str) -> Option<bool> {
        let me = self.user.as_ref().map(|u| u.id.clone());
        self.auth.check(Some(key), crate::auth::role::SUBSCRIBE).ok().map(|u| Some(&u.id) == me.as_ref())
    }
    fn bad_request(&mut self, what: &str) {
        self.actions.push(Action::BadRequest(what.to_string()));
    }
    fn count(&mut self, what: Count) {
        self.actions.push(Action::Count(what));
    }
    fn heartbeat(&mut self, now: u64) {
        self.last_tx_ns = now;
        self.actions.push(Action::Heartbeat);
    }
}
