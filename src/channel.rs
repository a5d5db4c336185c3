//! Named channels: opaque payloads (`signals`, `trades`, `trade@TATA_INR`)
//! fanned out like ticks, through dense ids and per-worker rings.
//!
//! A publisher (the publish port, Redis) turns a message into one complete
//! WebSocket frame, `{"type":"channel","channel":"signals","data":{…},"seq":…,"ts":…}`,
//! once; workers append the same `Arc`ed bytes to every subscriber. Names
//! map to ids here (control plane, a lock); the fan-out path sees only ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::encode::json::write_str;
use crate::ws::frame;

/// Dense channel id, `0..max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId(pub u32);

impl From<ChannelId> for usize {
    fn from(c: ChannelId) -> usize {
        c.0 as usize
    }
}

/// One channel message on its way to workers.
#[derive(Clone, Debug)]
pub struct ChannelMsg {
    /// Channel.
    pub channel: ChannelId,
    /// Per-channel sequence number, from 1.
    pub seq: u64,
    /// The complete text frame every subscriber receives.
    pub frame: Arc<[u8]>,
    /// The payload as published (what `--publish` mirrors to Redis).
    pub data: Arc<[u8]>,
    /// The payload alone as a text frame, for dialects that relay channel
    /// messages verbatim (exchange streams, Trading WS signals).
    pub raw: Arc<[u8]>,
}

/// Longest channel name.
pub const MAX_NAME: usize = 128;

/// Why a channel name or id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// Empty, too long, or characters outside `[A-Za-z0-9_@:.|-]`.
    BadName,
    /// `--max-channels` reached.
    Full,
}

impl ChannelError {
    /// Message for clients and publishers.
    pub fn message(self) -> &'static str {
        match self {
            ChannelError::BadName => {
                "channel names are 1-128 characters of A-Z a-z 0-9 _ @ : . | - (not starting with tcf1:)"
            }
            ChannelError::Full => "channel limit reached",
        }
    }
}

/// The user a private channel belongs to: `private:<user>:<name>` reaches
/// only that user's connections (portfolio and order updates).
pub fn private_owner(name: &str) -> Option<&str> {
    name.strip_prefix("private:").map(|rest| rest.split_once(':').map_or(rest, |(user, _)| user))
}

/// Is `name` an acceptable channel name? (`tcf1:` is reserved for ticks on Redis.)
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("tcf1:")
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b':' | b'.' | b'|' | b'-'))
}

/// The channel table: names ↔ ids, per-channel sequence numbers.
pub struct Channels {
    by_name: RwLock<FxHashMap<Box<str>, u32>>,
    names: RwLock<Vec<Arc<str>>>,
    seqs: Box<[AtomicU64]>,
    /// Time of each channel's newest message, ns since epoch (0: none yet;
    /// Trading WS `/websocket/status` shows it for `signals`).
    last_ns: Box<[AtomicU64]>,
}

impl Channels {
    /// Room for `max` channels.
    pub fn new(max: usize) -> Channels {
        Channels {
            by_name: RwLock::new(FxHashMap::default()),
            names: RwLock::new(Vec::new()),
            seqs: (0..max).map(|_| AtomicU64::new(0)).collect(),
            last_ns: (0..max).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Most channels.
    pub fn capacity(&self) -> usize {
        self.seqs.len()
    }

    /// The id of `name`, creating it if new.
    ///
    /// # Errors
    /// A bad name, or the table is full.
    pub fn id(&self, name: &str) -> Result<ChannelId, ChannelError> {
        if !valid_name(name) {
            return Err(ChannelError::BadName);
        }
        if let Some(&id) = self.by_name.read().get(name) {
            return Ok(ChannelId(id));
        }
        let mut by_name = self.by_name.write();
        if let Some(&id) = by_name.get(name) {
            return Ok(ChannelId(id));
        }
        let mut names = self.names.write();
        if names.len() >= self.seqs.len() {
            return Err(ChannelError::Full);
        }
        let id = names.len() as u32;
        names.push(name.into());
        by_name.insert(name.into(), id);
        Ok(ChannelId(id))
    }

    /// The newest sequence number `id` has handed out (0: none yet).
    pub fn current_seq(&self, id: ChannelId) -> u64 {
        self.seqs[id.0 as usize].load(Ordering::Relaxed)
    }

    /// When `id` last had a message, ns since epoch (0: never).
    pub fn last_message_ns(&self, id: ChannelId) -> u64 {
        self.last_ns[id.0 as usize].load(Ordering::Relaxed)
    }

    /// The id of an existing channel `name`.
    pub fn lookup(&self, name: &str) -> Option<ChannelId> {
        self.by_name.read().get(name).map(|&id| ChannelId(id))
    }

    /// The name of `id`.
    pub fn name(&self, id: ChannelId) -> Option<Arc<str>> {
        self.names.read().get(id.0 as usize).cloned()
    }

    /// Every (id, name) so far.
    pub fn all(&self) -> Vec<(ChannelId, Arc<str>)> {
        self.names.read().iter().enumerate().map(|(i, n)| (ChannelId(i as u32), n.clone())).collect()
    }

    /// Build the message for `data` (raw JSON if it parses as JSON, else a
    /// JSON string) on channel `id`, taking the next sequence number.
    pub fn message(&self, id: ChannelId, name: &str, data: &[u8], ts_ns: u64) -> ChannelMsg {
        let seq = self.seqs[id.0 as usize].fetch_add(1, Ordering::Relaxed) + 1;
        self.last_ns[id.0 as usize].fetch_max(ts_ns, Ordering::Relaxed);
        let mut out = Vec::with_capacity(data.len() + name.len() + 96);
        let start = frame::begin(&mut out);
        out.extend_from_slice(b"{\"type\":\"channel\",\"channel\":");
        write_str(&mut out, name);
        out.extend_from_slice(b",\"data\":");
        let mut copy = data.to_vec();
        let json = crate::encode::json::nesting_within(data, crate::encode::json::MAX_DEPTH)
            && simd_json::to_borrowed_value(&mut copy).is_ok();
        if json {
            out.extend_from_slice(data);
        } else {
            write_str(&mut out, &String::from_utf8_lossy(data));
        }
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(itoa::Buffer::new().format(ts_ns).as_bytes());
        out.push(b'}');
        let r = frame::finish(&mut out, start, frame::OP_TEXT);
        let mut raw = Vec::with_capacity(data.len() + 10);
        let start = frame::begin(&mut raw);
        if json {
            raw.extend_from_slice(data);
        } else {
            write_str(&mut raw, &String::from_utf8_lossy(data));
        }
        let rr = frame::finish(&mut raw, start, frame::OP_TEXT);
        ChannelMsg { channel: id, seq, frame: out[r].into(), data: data.into(), raw: raw[rr].into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(m: &ChannelMsg) -> serde_json::Value {
        let hl = if m.frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&m.frame[hl..]).unwrap()
    }

    #[test]
    fn names_get_stable_ids_and_messages_sequence() {
        let c = Channels::new(2);
        let a = c.id("signals").unwrap();
        assert_eq!(c.id("signals").unwrap(), a);
        let b = c.id("trade@TATA_INR").unwrap();
        assert_ne!(a, b);
        assert_eq!(c.id("third"), Err(ChannelError::Full));
        assert_eq!(c.id("has space"), Err(ChannelError::BadName));
        assert_eq!(c.id(""), Err(ChannelError::BadName));
        assert_eq!(c.id("tcf1:2885"), Err(ChannelError::BadName), "reserved for ticks");
        let m1 = c.message(a, "signals", br#"{"side":"buy","qty":5}"#, 7);
        let m2 = c.message(a, "signals", b"not json", 8);
        assert_eq!(
            payload(&m1),
            serde_json::json!({"type":"channel","channel":"signals","data":{"side":"buy","qty":5},"seq":1,"ts":7})
        );
        assert_eq!((payload(&m2)["data"].as_str(), m2.seq), (Some("not json"), 2));
        assert_eq!((c.last_message_ns(a), c.last_message_ns(b)), (8, 0));
        assert_eq!(&*c.name(b).unwrap(), "trade@TATA_INR");
        let raw = |m: &ChannelMsg| serde_json::from_slice::<serde_json::Value>(&m.raw[2..]).unwrap();
        assert_eq!(raw(&m1), serde_json::json!({"side":"buy","qty":5}), "relayed verbatim");
        assert_eq!(raw(&m2), serde_json::json!("not json"));
        assert_eq!(private_owner("private:alice:portfolio"), Some("alice"));
        assert_eq!(private_owner("private:bob"), Some("bob"));
        assert_eq!(private_owner("signals"), None);
    }
}
