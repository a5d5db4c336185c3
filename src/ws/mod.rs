//! WebSocket, sans-IO: frame headers, the incoming frame parser, messages
//! (control frames, fragments, UTF-8), the upgrade handshake and close
//! codes. Nothing here touches a socket or the
//! clock; the worker feeds bytes in and takes bytes out.

pub mod frame;
pub mod handshake;
pub mod message;

/// Close codes used by the server (RFC 6455 §7.4.1).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: unmasked or malformed frames.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload data: text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: rate limits and similar.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: slow consumer on a lossless subscription.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
