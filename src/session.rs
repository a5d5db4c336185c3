//! Sessions: what a disconnected `client_id` was subscribed to, kept for a
//! while so a reconnect with the same id gets its subscriptions back.
//!
//! Control plane only (touched at connect and disconnect), so a
//! `parking_lot::Mutex` around a map is the right tool.
//!
//! With `--state-file`, the sessions outlive the process: written on a
//! clean stop ([`Sessions::write_state`], after the workers saved every
//! resumable connection they closed), read back on start
//! ([`Sessions::read_state`]). The file is JSON, versioned:
//!
//! ```json
//! {"format":"tickcast-sessions","version":1,"sessions":[
//!   {"user":"","client_id":"desk-7","expires_unix_ms":1765000000000,
//!    "subs":[{"token":2885,"mode":"quote","delivery":"lossless"},
//!            {"token":1594,"mode":"ltp","delivery":"max_rate","interval_ns":200000000}]}]}
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::subs::Delivery;
use crate::tick::Mode;

/// One saved subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedSub {
    /// Instrument token.
    pub token: u32,
    /// Mode it had.
    pub mode: Mode,
    /// Delivery policy it had.
    pub delivery: Delivery,
}

/// Most sessions kept at once; past it, the oldest is forgotten to keep
/// the newest (a connect/subscribe/disconnect loop must not grow memory
/// without bound, nor lock out the clients that come after it).
pub const MAX_SESSIONS: usize = 100_000;
/// Most sessions one user keeps; past it, that user's oldest is forgotten,
/// so one user's storm cannot push out everyone else's sessions.
pub const MAX_PER_USER: usize = 10_000;
/// A full store is reported at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Saved subscriptions by session key (`user` U+001F `client_id`), each
/// with its expiry.
pub struct Sessions {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Instant, Vec<SavedSub>)>,
    /// Keys in the order saved, with the expiry they were saved with (an
    /// entry whose expiry no longer matches was replaced or taken).
    order: VecDeque<(Instant, String)>,
    /// Sessions kept per user.
    per_user: HashMap<String, usize>,
    /// Sessions forgotten to make room since the last report.
    evicted: u64,
    last_report: Option<Instant>,
}

/// The user part of a session key.
/// The state file's `format` and `version`.
const STATE_FORMAT: &str = "tickcast-sessions";
const STATE_VERSION: u64 = 1;

/// Wall-clock ms since the epoch (the state file outlives `Instant`s).
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One saved subscription in the state file.
fn sub_json(s: &SavedSub) -> Value {
    let mut v = json!({"token": s.token, "mode": s.mode.name(), "delivery": s.delivery.name()});
    if let Delivery::MaxRate { interval_ns } = s.delivery {
        v["interval_ns"] = interval_ns.into();
    }
    v
}

/// The saved subscription in `v`, as [`sub_json`] wrote it.
fn sub_from_json(v: &Value) -> Result<SavedSub> {
    let token = v["token"].as_u64().and_then(|t| u32::try_from(t).ok()).context("`token` is not a u32")?;
    let mode = v["mode"].as_str().and_then(Mode::parse).context("`mode` is not ltp, quote or depth")?;
    let delivery = match v["delivery"].as_str() {
        Some("conflate") => Delivery::Conflate,
        Some("lossless") => Delivery::Lossless,
        Some("max_rate") => Delivery::MaxRate {
            interval_ns: v["interval_ns"].as_u64().filter(|&n| n > 0).context("max_rate without `interval_ns`")?,
        },
        _ => bail!("`delivery` is not conflate, lossless or max_rate"),
    };
    Ok(SavedSub { token, mode, delivery })
}

fn user_of(key: &str) -> &str {
    key.split_once('\u{1f}').map_or("", |(u, _)| u)
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<(Instant, Vec<SavedSub>)> {
        let v = self.map.remove(key)?;
        if let Some(n) = self.per_user.get_mut(user_of(key)) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user_of(key));
            }
        }
        Some(v)
    }

    /// Forget the oldest session (of `user`, when given); false if none.
    fn evict_oldest(&mut self, user: Option<&str>) -> bool {
        let Some(pos) = self
            .order
            .iter()
            .position(|(at, k)| user.is_none_or(|u| user_of(k) == u) && self.map.get(k).is_some_and(|(e, _)| e == at))
        else {
            return false;
        };
        let (_, key) = self.order.remove(pos).expect("found above");
        self.remove(&key);
        self.evicted += 1;
        true
    }

    /// Drop order entries whose session is gone or replaced, from the front.
    fn trim(&mut self) {
        while let Some((at, k)) = self.order.front() {
            if self.map.get(k).is_some_and(|(e, _)| e == at) {
                break;
            }
            self.order.pop_front();
        }
    }
}

impl Sessions {
    /// A store keeping sessions for `ttl` after disconnect.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { ttl, inner: Mutex::new(Inner::default()) }
    }

    /// Remember `subs` under `key` (`Conn::session_key`), replacing what
    /// was there; at a bound the oldest session (the user's own, at the
    /// per-user bound) is forgotten, and that is reported once a minute.
    pub fn save(&self, key: &str, subs: Vec<SavedSub>, now: Instant) {
        self.save_for(key, subs, now, self.ttl);
    }

    /// [`Sessions::save`], kept for `ttl` (a restored session keeps what
    /// was left of its own).
    fn save_for(&self, key: &str, subs: Vec<SavedSub>, now: Instant, ttl: Duration) {
        if subs.is_empty() || ttl.is_zero() {
            return;
        }
        let mut g = self.inner.lock();
        g.remove(key);
        let user = user_of(key);
        if g.per_user.get(user).is_some_and(|&n| n >= MAX_PER_USER) {
            g.evict_oldest(Some(user));
        }
        if g.map.len() >= MAX_SESSIONS {
            g.evict_oldest(None);
        }
        let expires = now + ttl;
        g.map.insert(key.to_string(), (expires, subs));
        *g.per_user.entry(user.to_string()).or_default() += 1;
        g.order.push_back((expires, key.to_string()));
        g.trim();
        if g.evicted > 0 && g.last_report.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            log::warn!(
                "session store at its bound ({MAX_SESSIONS}, {MAX_PER_USER} a user): forgot the {} oldest saved session(s) to keep newer ones",
                g.evicted
            );
            g.evicted = 0;
            g.last_report = Some(now);
        }
    }

    /// Take back what `key` had, unless it expired.
    /// Write every unexpired session to `path` (through a temporary file
    /// and a rename, so a crash mid-write leaves the old file or none).
    /// Returns how many were written.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_state(&self, path: &Path, now: Instant) -> Result<usize> {
        let wall = unix_ms();
        let sessions: Vec<Value> = {
            let g = self.inner.lock();
            g.map
                .iter()
                .filter(|(_, (e, _))| *e > now)
                .map(|(key, (e, subs))| {
                    let (user, client_id) = key.split_once('\u{1f}').unwrap_or(("", key));
                    json!({
                        "user": user,
                        "client_id": client_id,
                        "expires_unix_ms": wall + e.duration_since(now).as_millis() as u64,
                        "subs": subs.iter().map(sub_json).collect::<Vec<_>>(),
                    })
                })
                .collect()
        };
        let n = sessions.len();
        let text = json!({"format": STATE_FORMAT, "version": STATE_VERSION, "sessions": sessions}).to_string();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(n)
    }

    /// Restore the sessions in `path` that have not expired (a missing file
    /// is no sessions). Returns how many were restored. Nothing is restored
    /// from a file that fails any check.
    ///
    /// # Errors
    /// Unreadable, not JSON, another format or version, or a malformed session.
    pub fn read_state(&self, path: &Path, now: Instant) -> Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            r => r.with_context(|| format!("reading {}", path.display()))?,
        };
        let v: Value = serde_json::from_str(&text).context("not JSON")?;
        if v["format"] != STATE_FORMAT || v["version"] != STATE_VERSION {
            bail!(
                "not a tickcast session file of version {STATE_VERSION} (format {}, version {})",
                v["format"],
                v["version"]
            );
        }
        let wall = unix_ms();
        let mut restored = Vec::new();
        for (i, s) in v["sessions"].as_array().context("`sessions` is not a list")?.iter().enumerate() {
            let field = |k: &str| s[k].as_str().with_context(|| format!("session {i}: `{k}` is not a string"));
            let (user, client_id) = (field("user")?, field("client_id")?);
            let expires =
                s["expires_unix_ms"].as_u64().with_context(|| format!("session {i}: no `expires_unix_ms`"))?;
            let subs = s["subs"]
                .as_array()
                .with_context(|| format!("session {i}: `subs` is not a list"))?
                .iter()
                .map(sub_from_json)
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("session {i}"))?;
            if expires > wall {
                restored.push((format!("{user}\u{1f}{client_id}"), Duration::from_millis(expires - wall), subs));
            }
        }
        let n = restored.len();
        for (key, left, subs) in restored {
            self.save_for(&key, subs, now, left.min(self.ttl));
        }
        Ok(n)
    }

    pub fn take(&self, key: &str, now: Instant) -> Option<Vec<SavedSub>> {
        let (expires, subs) = self.inner.lock().remove(key)?;
        (expires > now).then_some(subs)
    }

    /// Drop expired sessions; returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut g = self.inner.lock();
        let expired: Vec<String> = g.map.iter().filter(|(_, (e, _))| *e <= now).map(|(k, _)| k.clone()).collect();
        for k in &expired {
            g.remove(k);
        }
        // Replaced and taken sessions leave entries behind live ones.
        let Inner { map, order, .. } = &mut *g;
        order.retain(|(at, k)| map.get(k).is_some_and(|(e, _)| e == at));
        g.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_then_taken_once_until_expiry() {
        let s = Sessions::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let sub = SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Conflate };
        s.save("a", vec![sub], t0);
        assert_eq!(s.take("a", t0 + Duration::from_secs(1)), Some(vec![sub]));
        assert_eq!(s.take("a", t0), None, "taken once");
        s.save("b", vec![sub], t0);
        assert_eq!(s.take("b", t0 + Duration::from_secs(11)), None, "expired");
        s.save("c", vec![sub], t0);
        assert_eq!(s.sweep(t0 + Duration::from_secs(11)), 0);
    }

    fn sub() -> SavedSub {
        SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Conflate }
    }

    /// Full: the oldest goes, the newest stays; a user at its own bound
    /// loses its own oldest, not anyone else's.
    #[test]
    fn at_a_bound_the_oldest_is_forgotten() {
        let s = Sessions::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let key = |u: &str, i: usize| format!("{u}\u{1f}c{i}");
        s.save(&key("other", 0), vec![sub()], t0);
        for i in 0..MAX_PER_USER + 5 {
            s.save(&key("storm", i), vec![sub()], t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_secs(1);
        assert_eq!(s.take(&key("storm", 0), now), None, "the user's oldest went");
        assert_eq!(s.take(&key("storm", 4), now), None);
        assert!(s.take(&key("storm", 5), now).is_some());
        assert!(s.take(&key("storm", MAX_PER_USER + 4), now).is_some(), "the newest stays");
        assert!(s.take(&key("other", 0), now).is_some(), "another user's session is untouched");
        // Re-saving one key many times leaves no backlog after a sweep.
        for i in 0..1000 {
            s.save(&key("again", 0), vec![sub()], t0 + Duration::from_millis(i));
        }
        assert_eq!(s.sweep(now), MAX_PER_USER - 2 + 1);
        let g = s.inner.lock();
        assert_eq!(g.order.len(), g.map.len(), "no stale order entries left");
    }

    /// Written and read back: every kind of delivery, the user kept apart
    /// from the id, the time left kept; expired sessions are not written.
    #[test]
    fn the_state_file_round_trips_unexpired_sessions() {
        let path = std::env::temp_dir().join(format!("tickcast-sessions-unit-{}.json", std::process::id()));
        let t0 = Instant::now();
        let s = Sessions::new(Duration::from_secs(60));
        let subs = vec![
            SavedSub { token: 2885, mode: Mode::Quote, delivery: Delivery::Lossless },
            SavedSub { token: 1594, mode: Mode::Ltp, delivery: Delivery::MaxRate { interval_ns: 200_000_000 } },
            SavedSub { token: 11536, mode: Mode::Depth, delivery: Delivery::Conflate },
        ];
        s.save("alice\u{1f}desk-7", subs.clone(), t0);
        s.save("\u{1f}anon-chosen", subs[..1].to_vec(), t0);
        let short = Sessions::new(Duration::from_millis(1));
        short.save("\u{1f}gone", subs.clone(), t0);
        assert_eq!(short.write_state(&path, t0 + Duration::from_secs(1)).unwrap(), 0, "expired: not written");
        assert_eq!(s.write_state(&path, t0).unwrap(), 2);
        let back = Sessions::new(Duration::from_secs(60));
        assert_eq!(back.read_state(&path, t0).unwrap(), 2);
        assert_eq!(back.take("alice\u{1f}desk-7", t0 + Duration::from_secs(30)), Some(subs.clone()));
        assert_eq!(back.take("\u{1f}anon-chosen", t0 + Duration::from_secs(61)), None, "the time left is kept");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.read_state(&path, t0).unwrap(), 0, "no file: no sessions");
    }
}
