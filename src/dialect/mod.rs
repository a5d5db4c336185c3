//! Client protocols: which one a connection speaks ([`Dialect`], chosen by
//! the upgrade path or the listener).

/// A connection's client protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `/stream`.
    #[default]
    Native,
    /// Odin streamer (`/enhanced-stream`, `/live-stream`).
    Odin,
    /// Trading WS (`/ws`).
    Trading,
    /// Campus prices (`/api/ws/prices`).
    Campus,
    /// OpenAlgo (its own listener).
    OpenAlgo,
    /// Exchange streams (`/`).
    Exchange,
}

impl Dialect {
    /// Number of dialects (per-dialect counters).
    pub const COUNT: usize = 6;
    /// Every dialect, in index order.
    pub const ALL: [Dialect; Dialect::COUNT] =
        [Dialect::Native, Dialect::Odin, Dialect::Trading, Dialect::Campus, Dialect::OpenAlgo, Dialect::Exchange];

    /// The dialect served at `path` on the main port.
    pub fn for_path(path: &str) -> Option<Dialect> {
        match path {
            "/stream" => Some(Dialect::Native),
            "/enhanced-stream" | "/live-stream" => Some(Dialect::Odin),
            "/ws" => Some(Dialect::Trading),
            "/api/ws/prices" => Some(Dialect::Campus),
            "/" => Some(Dialect::Exchange),
            _ => None,
        }
    }

    /// Name in `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Native => "native",
            Dialect::Odin => "odin",
            Dialect::Trading => "trading_ws",
            Dialect::Campus => "campus",
            Dialect::OpenAlgo => "openalgo",
            Dialect::Exchange => "exchange",
        }
    }
}
