//! What the cargo-fuzz targets in `fuzz/` need that the crate keeps to
//! itself (feature `fuzzing`; hidden, not an API): a dialect driven without
//! a server, through the unit tests' `Pair` host.
//!
//! Every other parser the targets fuzz (frames, messages, the upgrade
//! request, TCF1, Kite packets, the auth file, the flags file, market
//! hours) is public already and is called directly.

use crate::dialect::pair::{Action, Pair};
use crate::dialect::Dialect;
use crate::ws::handshake;

/// What a dialect sent its client, as the target checks it.
#[derive(Debug)]
pub enum Sent {
    /// A text reply on the control lane.
    Reply(String),
    /// A data frame (a snapshot or a market notice), whole frame bytes.
    Data(Vec<u8>),
    /// The connection was closed with this code.
    Close(u16),
}

/// One connection in one dialect: the bundled master with last values for
/// its first instruments (so subscribing snapshots them), the default
/// configuration, a clock the target moves.
pub struct Dialogue {
    pair: Pair,
}

impl Dialogue {
    /// Upgrade at `/?query` as `dialect`.
    ///
    /// # Errors
    /// The dialect refused the upgrade (the HTTP status and body), or the
    /// query cannot be in a request line (400, as the worker answers).
    pub fn open(dialect: Dialect, query: &str) -> Result<Dialogue, (u16, String)> {
        let line = format!("GET /?{query} HTTP/1.1\r\n\r\n");
        if !matches!(handshake::parse(line.as_bytes()), handshake::Head::Complete(..)) {
            return Err((400, "malformed HTTP request".into()));
        }
        let mut pair = Pair::new();
        let tokens: Vec<u32> = pair.registry.iter().take(8).map(|(_, i)| i.token).collect();
        for (i, token) in tokens.into_iter().enumerate() {
            pair.value(token, i as u64 + 1, 100_000 + i as i64);
        }
        pair.open(&format!("/?{query}"), dialect)?;
        Ok(Dialogue { pair })
    }

    /// The client sends a text message (the worker has checked it is UTF-8).
    pub fn text(&mut self, text: &str) {
        self.pair.send(text);
    }

    /// The client sends a binary message.
    pub fn binary(&mut self) {
        self.pair.send_binary();
    }

    /// `ms` pass, then the dialect's housekeeping runs.
    pub fn advance(&mut self, ms: u64) {
        self.pair.advance(ms);
    }

    /// Instruments subscribed now.
    pub fn subscriptions(&self) -> usize {
        self.pair.slots.len()
    }

    /// The configured per-connection subscription limit.
    pub fn max_subscriptions(&self) -> usize {
        self.pair.config.max_subscriptions
    }

    /// What was sent since the last call.
    pub fn take(&mut self) -> Vec<Sent> {
        self.pair
            .take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Reply(t) => Some(Sent::Reply(t)),
                Action::Data(f) => Some(Sent::Data(f)),
                Action::Close(code, _) => Some(Sent::Close(code)),
                _ => None,
            })
            .collect()
    }
}
