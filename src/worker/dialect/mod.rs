//! Client dialects: the native protocol and the five seed protocols tickcast
//! is a drop-in for. The endpoint path (and, for OpenAlgo, the listener)
//! picks a connection's dialect at the upgrade; everything behind it —
//! registry, subscription table, fan-out, channels — is shared. A dialect
//! owns only its request parsing, its replies and its frame shape
//! (`encode::dialects`).
//!
//! | dialect | endpoint | seed |
//! |---|---|---|
//! | native | `/stream` | `spec/protocol.md` |
//! | Odin | `/enhanced-stream`, `/live-stream` | `000_…` |
//! | Trading WS | `/ws` | `001_…` |
//! | Campus prices | `/api/ws/prices` | `002_…` |
//! | OpenAlgo | any path on `--openalgo-listen` | `003_…` |
//! | Exchange streams | `/` | `004_…` |

pub(super) mod campus;
pub(super) mod exchange;
pub(super) mod native;
pub(super) mod odin;
pub(super) mod openalgo;
pub(super) mod trading;

use super::Worker;
pub use crate::dialect::Dialect;
use crate::subs::ConnId;
use crate::ws::handshake::Request;

/// Per-connection state a dialect keeps beyond the common fields.
#[derive(Default)]
pub(crate) enum Ext {
    /// Nothing extra.
    #[default]
    None,
    /// Trading WS: batched price updates, held portfolio update.
    Trading(Box<trading::State>),
    /// Campus: subscription-change rate limit, idle timeout.
    Campus(Box<campus::State>),
    /// OpenAlgo: authenticated yet?
    OpenAlgo(Box<openalgo::State>),
}

/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 128;

/// The `client_id` query parameter, validated, or a fresh random one.
///
/// # Errors
/// Empty, too long or with control characters.
pub(crate) fn client_id(req: &Request) -> Result<String, String> {
    match req.param("client_id") {
        Some(cid) if cid.is_empty() || cid.len() > MAX_CLIENT_ID || cid.chars().any(char::is_control) => {
            Err(format!("client_id must be 1..={MAX_CLIENT_ID} printable characters"))
        }
        Some(cid) => Ok(cid),
        None => Ok(format!("{:016x}", fastrand::u64(..))),
    }
}

/// Parse a client message (after the nesting guard: simd-json recurses).
///
/// # Errors
/// The message for the client: too deep, or malformed with where.
pub(crate) fn parse_json(payload: &mut [u8]) -> Result<simd_json::BorrowedValue<'_>, String> {
    use crate::encode::json::{nesting_within, MAX_DEPTH};
    if !nesting_within(payload, MAX_DEPTH) {
        return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
    }
    simd_json::to_borrowed_value(payload).map_err(|e| format!("malformed JSON: {e}"))
}

/// Validate the upgrade request and open the connection in `dialect`.
///
/// # Errors
/// A bad query parameter; the caller answers 400 with the message.
pub(super) fn open(w: &mut Worker, id: ConnId, req: &Request, dialect: Dialect, now: u64) -> Result<(), String> {
    match dialect {
        Dialect::Native => native::open(w, id, req, now),
        Dialect::Odin => odin::open(w, id, req, now),
        Dialect::Trading => trading::open(w, id, req, now),
        Dialect::Campus => campus::open(w, id, req, now),
        Dialect::OpenAlgo => openalgo::open(w, id, req, now),
        Dialect::Exchange => exchange::open(w, id, req, now),
    }
}

/// One complete text message (valid UTF-8).
pub(super) fn handle(w: &mut Worker, id: ConnId, payload: &mut [u8], now: u64) {
    let Some(c) = w.conn(id) else { return };
    match c.dialect {
        Dialect::Native => native::handle(w, id, payload, now),
        Dialect::Odin => odin::handle(w, id, payload, now),
        Dialect::Trading => trading::handle(w, id, payload, now),
        Dialect::Campus => campus::handle(w, id, payload, now),
        Dialect::OpenAlgo => openalgo::handle(w, id, payload, now),
        Dialect::Exchange => exchange::handle(w, id, payload, now),
    }
}

/// A binary message: every dialect speaks JSON text; answer in its terms.
pub(super) fn binary(w: &mut Worker, id: ConnId, now: u64) {
    const MSG: &str = "binary messages are not accepted; send requests as JSON text frames";
    let Some(c) = w.conn(id) else { return };
    match c.dialect {
        Dialect::Native => native::reply_error(w, id, None, "unsupported", MSG, now),
        Dialect::Odin => odin::reply_error(w, id, MSG, now),
        Dialect::Trading => trading::reply_error(w, id, MSG, now),
        Dialect::Campus => campus::reply_error(w, id, MSG, now),
        Dialect::OpenAlgo => openalgo::reply_error(w, id, "INVALID_MESSAGE", MSG, now),
        Dialect::Exchange => exchange::reply_error(w, id, None, MSG, now),
    }
}

/// The notice a dialect's clients get when the market opens or closes.
pub(super) fn market_status(dialect: Dialect, open: bool, now: u64) -> Vec<u8> {
    match dialect {
        Dialect::Native => native::market_status(open, now),
        Dialect::Odin => odin::market_status(open, now),
        Dialect::Trading => trading::market_status(open, now),
        Dialect::Campus => campus::market_status(open, now),
        Dialect::OpenAlgo => openalgo::market_status(open, now),
        Dialect::Exchange => exchange::market_status(open, now),
    }
}

/// Housekeeping for one open connection (about every 100 ms): heartbeats,
/// pings, idle timeouts, batched updates that are due.
pub(super) fn housekeeping(w: &mut Worker, id: ConnId, now: u64) {
    let Some(c) = w.conn(id) else { return };
    match c.dialect {
        Dialect::Native => native::housekeeping(w, id, now),
        Dialect::Odin => odin::housekeeping(w, id, now),
        Dialect::Trading => trading::housekeeping(w, id, now),
        Dialect::Campus => campus::housekeeping(w, id, now),
        Dialect::OpenAlgo => openalgo::housekeeping(w, id, now),
        Dialect::Exchange => exchange::housekeeping(w, id, now),
    }
}
