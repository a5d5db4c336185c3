//! API keys: who may connect, what they may do, how much they may hold.
//!
//! `--auth-file users.toml` lists users with their keys stored as SHA-256
//! digests (never in clear: `tickcast hash-key KEY` prints the line to put
//! in the file), their roles and limits:
//!
//! ```toml
//! [[user]]
//! id = "alice"
//! keys = ["sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"]
//! roles = ["subscribe"]          # subscribe | admin (publish: reserved)
//! max-connections = 10           # optional
//! max-subscriptions = 500        # optional, over all of the user's connections
//! ```
//!
//! A key arrives as the `api_key` query parameter, an `Authorization:
//! Bearer` header or the OpenAlgo `authenticate` message; it is hashed and
//! looked up (the table is keyed by digest, so no clear key is kept). Without
//! an auth file every client is the anonymous user.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Role bits.
pub mod role {
    /// Open streams and subscribe.
    pub const SUBSCRIBE: u8 = 1;
    /// Publish channel messages. Reserved: the publish port and Redis are
    /// trusted interfaces that take no keys yet.
    pub const PUBLISH: u8 = 2;
    /// Read `/status` and `/metrics` when keys are required.
    pub const ADMIN: u8 = 4;
}

/// One user: identity, roles, limits and live usage.
#[derive(Debug)]
pub struct User {
    /// User id (private channels `private:<id>:…` are theirs).
    pub id: Box<str>,
    /// `role::*` bits.
    pub roles: u8,
    /// Most concurrent connections (`None`: the server's limit).
    pub max_connections: Option<usize>,
    /// Most subscriptions over all connections (`None`: per-connection limit only).
    pub max_subscriptions: Option<usize>,
    /// Open connections now.
    pub connections: AtomicUsize,
    /// Subscriptions held now, over all connections.
    pub subscriptions: AtomicUsize,
}

impl User {
    /// The anonymous user every client is when there is no auth file.
    pub fn anonymous() -> Arc<User> {
        Arc::new(User {
            id: "anonymous".into(),
            roles: role::SUBSCRIBE | role::PUBLISH | role::ADMIN,
            max_connections: None,
            max_subscriptions: None,
            connections: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
        })
    }

    /// Does the user hold `r`?
    pub fn can(&self, r: u8) -> bool {
        self.roles & r == r
    }

    /// Take one connection slot; `false` at the user's limit.
    pub fn try_connect(&self) -> bool {
        let max = self.max_connections.unwrap_or(usize::MAX);
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Give a connection slot back.
    pub fn disconnect(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Take one subscription slot; `false` at the user's limit.
    pub fn try_subscribe(&self) -> bool {
        let max = self.max_subscriptions.unwrap_or(usize::MAX);
        self.subscriptions.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Give `n` subscription slots back.
    pub fn unsubscribed(&self, n: usize) {
        self.subscriptions.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Why a key was refused (all answer 401; the reason is logged and counted,
/// never told to the client beyond "invalid or missing API key").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No key given.
    Missing,
    /// Unknown key.
    Invalid,
    /// Known key without the role needed.
    Forbidden,
}

/// The user table.
#[derive(Debug)]
pub struct Auth {
    by_digest: FxHashMap<[u8; 32], Arc<User>>,
    anonymous: Option<Arc<User>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct UserEntry {
    id: String,
    keys: Vec<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_subscriptions: Option<usize>,
}

/// SHA-256 of `key`.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `keys` entry for `key`: `sha256:<hex>`.
pub fn hash_line(key: &str) -> String {
    let mut s = String::from("sha256:");
    for b in digest(key) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// No auth file: everyone is the anonymous user.
    pub fn open() -> Auth {
        Auth { by_digest: FxHashMap::default(), anonymous: Some(User::anonymous()) }
    }

    /// Load an auth file.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, a key not in `sha256:<64 hex>` form, an
    /// unknown role, a duplicate user or key.
    pub fn load(path: &Path) -> Result<Auth> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading auth file {}", path.display()))?;
        Auth::parse(&text).with_context(|| format!("auth file {}", path.display()))
    }

    /// Parse an auth file's text.
    ///
    /// # Errors
    /// See [`Auth::load`].
    pub fn parse(text: &str) -> Result<Auth> {
        let file: File = toml::from_str(text)?;
        let mut by_digest = FxHashMap::default();
        let mut ids = std::collections::HashSet::new();
        for u in file.user {
            if u.id.is_empty() || !u.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
                bail!("user id `{}`: use 1+ characters of A-Z a-z 0-9 _ - .", u.id);
            }
            if !ids.insert(u.id.clone()) {
                bail!("user `{}` is listed twice", u.id);
            }
            let mut roles = 0;
            for r in u.roles.unwrap_or_else(|| vec!["subscribe".into()]) {
                roles |= match r.as_str() {
                    "subscribe" => role::SUBSCRIBE,
                    "publish" => role::PUBLISH,
                    "admin" => role::ADMIN,
                    other => bail!("user `{}`: unknown role `{other}` (subscribe, publish, admin)", u.id),
                };
            }
            let user = Arc::new(User {
                id: u.id.as_str().into(),
                roles,
                max_connections: u.max_connections,
                max_subscriptions: u.max_subscriptions,
                connections: AtomicUsize::new(0),
                subscriptions: AtomicUsize::new(0),
            });
            if u.keys.is_empty() {
                bail!("user `{}` has no keys", u.id);
            }
            for k in &u.keys {
                let d = parse_digest(k).with_context(|| {
                    format!(
                        "user `{}`: key `{k}` is not `sha256:<64 hex digits>` (make one with `tickcast hash-key KEY`)",
                        u.id
                    )
                })?;
                if by_digest.insert(d, user.clone()).is_some() {
                    bail!("user `{}`: a key is listed twice", u.id);
                }
            }
        }
        Ok(Auth { by_digest, anonymous: None })
    }

    /// Are keys required?
    pub fn required(&self) -> bool {
        self.anonymous.is_none()
    }

    /// The user `key` belongs to, if it holds role `r`.
    ///
    /// # Errors
    /// Why not.
    pub fn check(&self, key: Option<&str>, r: u8) -> Result<Arc<User>, Refused> {
        let user = match (&self.anonymous, key) {
            (Some(anon), _) => anon.clone(),
            (None, None) => return Err(Refused::Missing),
            (None, Some(k)) => self.by_digest.get(&digest(k)).cloned().ok_or(Refused::Invalid)?,
        };
        if user.can(r) {
            Ok(user)
        } else {
            Err(Refused::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> String {
        format!(
            "[[user]]\nid = \"alice\"\nkeys = [\"{}\"]\nmax-connections = 1\n\n[[user]]\nid = \"ops\"\nkeys = [\"{}\"]\nroles = [\"admin\"]\n",
            hash_line("alice-key"),
            hash_line("ops-key")
        )
    }

    /// Known answers: FIPS 180-2 / NIST's SHA-256 examples ("abc", the
    /// empty message, the two-block 448-bit message), and the module doc's
    /// example line (the key `secret`).
    #[test]
    fn digests_are_sha256_known_answers() {
        let hex = |key: &str| digest(key).iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(hash_line("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_line("secret"), "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
    }

    #[test]
    fn keys_resolve_to_users_with_roles() {
        let a = Auth::parse(&file()).unwrap();
        assert!(a.required());
        let alice = a.check(Some("alice-key"), role::SUBSCRIBE).unwrap();
        assert_eq!(&*alice.id, "alice");
        assert_eq!(a.check(None, role::SUBSCRIBE).unwrap_err(), Refused::Missing);
        assert_eq!(a.check(Some("nope"), role::SUBSCRIBE).unwrap_err(), Refused::Invalid);
        assert_eq!(a.check(Some("alice-key"), role::ADMIN).unwrap_err(), Refused::Forbidden);
        assert_eq!(a.check(Some("ops-key"), role::SUBSCRIBE).unwrap_err(), Refused::Forbidden);
        assert!(a.check(Some("ops-key"), role::ADMIN).is_ok());
        assert!(alice.try_connect());
        assert!(!alice.try_connect(), "max-connections = 1");
        alice.disconnect();
        assert!(alice.try_connect());
    }

    #[test]
    fn open_mode_is_anonymous() {
        let a = Auth::open();
        assert!(!a.required());
        assert_eq!(&*a.check(None, role::ADMIN).unwrap().id, "anonymous");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("[[user]]\nid = \"a\"\nkeys = [\"plaintext\"]\n", "not `sha256:"),
            ("[[user]]\nid = \"a\"\nkeys = []\n", "no keys"),
            ("[[user]]\nid = \"a b\"\nkeys = []\n", "user id"),
            ("[[user]]\nid = \"a\"\nkeys = [\"sha256:00\"]\nroles = [\"root\"]\n", "unknown role"),
            ("[[users]]\n", "unknown field"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Auth::parse(text).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
        let dup = format!("{}{}", file(), file().replace("alice", "bob").replace("ops", "ops2"));
        assert!(format!("{:#}", Auth::parse(&dup).unwrap_err()).contains("twice"));
    }
}
