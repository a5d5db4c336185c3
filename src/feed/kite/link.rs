//! One upstream link: TCP, TLS (rustls, the web PKI roots plus `ca=`,
//! hostname verified) for `kite://`, and the WebSocket handshake.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::WebSocket;

use crate::feed::spec::KiteSpec;

/// TCP connect, TLS and WebSocket handshake timeout, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message taken from upstream: a full frame for 3,000 instruments
/// is about 560 kB; anything far beyond is not Kite and closes the link.
const MAX_MESSAGE: usize = 4 << 20;

/// A link's byte stream: plain TCP (`kite+ws://`) or TLS (`kite://`).
pub(super) enum Transport {
    /// `kite+ws://`.
    Plain(TcpStream),
    /// `kite://` (boxed: the TLS state is large).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// The upstream answered the handshake with this HTTP status.
    Refused(u16),
    /// Anything else (resolution, TCP, TLS, timeout), as text.
    Failed(String),
}

/// The TLS settings: the web PKI roots plus the certificates of `ca`.
pub(super) fn tls_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca {
        let what = || format!("ca={}", path.display());
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).with_context(what)? {
            roots.add(cert.with_context(what)?).with_context(what)?;
            added += 1;
        }
        if added == 0 {
            bail!("{}: no certificate in the file", what());
        }
    }
    // ring, not aws-lc-rs: no cmake or NASM in the build. rustls 0.23.48
    // deprecates it for lacking post-quantum key exchange, which a market
    // data link can do without; classical ECDHE is still negotiated.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Open one link: TCP, TLS when `tls`, the WebSocket handshake; blocking
/// with timeouts, then non-blocking for the poll loop.
pub(super) fn connect(spec: &KiteSpec, tls: Option<&Arc<ClientConfig>>) -> Result<WebSocket<Transport>, ConnectError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| ConnectError::Failed(format!("{what}: {e}"));
    let host = spec.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, spec.port).to_socket_addrs().map_err(|e| failed("resolving", &e))?;
    let mut last = ConnectError::Failed(format!("{host} has no address"));
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = failed(&format!("connecting to {addr}"), &e),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        s.set_write_timeout(Some(CONNECT_TIMEOUT))
    };
    setup(&tcp).map_err(|e| failed("socket options", &e))?;
    let transport = match tls {
        None => Transport::Plain(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| failed(&format!("server name `{host}`"), &e))?;
            let conn = ClientConnection::new(config.clone(), name).map_err(|e| failed("TLS", &e))?;
            Transport::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    };
    let mut req = spec.url().into_client_request().map_err(|e| failed("request", &e))?;
    req.headers_mut().insert("X-Kite-Version", tungstenite::http::HeaderValue::from_static("3"));
    let config = tungstenite::protocol::WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE),
        max_frame_size: Some(MAX_MESSAGE),
        ..Default::default()
    };
    let ws = match tungstenite::client::client_with_config(req, transport, Some(config)) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            return Err(ConnectError::Refused(resp.status().as_u16()))
        }
        Err(HandshakeError::Failure(e)) => return Err(failed("handshake", &e)),
        Err(HandshakeError::Interrupted(_)) => return Err(ConnectError::Failed("handshake timed out".into())),
    };
    let s = ws.get_ref().tcp();
    s.set_read_timeout(None).and_then(|()| s.set_nonblocking(true)).map_err(|e| failed("socket options", &e))?;
    Ok(ws)
}

/// One upstream connection's state.
pub(super) struct Link {
    /// The open WebSocket (`None`: down).
    pub(super) ws: Option<WebSocket<Transport>>,
    /// When the newest frame arrived (or the link opened).
    pub(super) last_frame: Instant,
    /// Failed attempts since the link was last up.
    pub(super) attempt: u32,
    /// No attempt before this.
    pub(super) retry_at: Instant,
    /// The refusal status already logged this streak.
    pub(super) refused: Option<u16>,
    /// A failure was logged this streak (the rest go to debug).
    pub(super) failing: bool,
    /// A round stopped before WouldBlock: read again without waiting.
    pub(super) more: bool,
}

impl Link {
    pub(super) fn new() -> Link {
        let now = Instant::now();
        Link { ws: None, last_frame: now, attempt: 0, retry_at: now, refused: None, failing: false, more: false }
    }
}
