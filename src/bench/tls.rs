//! The harness's side of `wss://`: which certificates its clients trust
//! (a given CA, or none checked for a self-signed test certificate) and a
//! rustls client connection per WebSocket. Client-side TLS is rustls's
//! ordinary buffered API: the harness measures the server, not itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// What every client of a run connects with.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl ClientTls {
    /// Trust `ca` (PEM), or with `insecure` any certificate, for `host`.
    ///
    /// # Errors
    /// An unreadable CA file, or a host that is not a DNS name or address.
    pub fn new(host: &str, ca: Option<&std::path::Path>, insecure: bool) -> Result<ClientTls> {
        let provider = Arc::new(crate::tls::provider());
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match ca {
                Some(path) => {
                    let pem = std::fs::read(path).with_context(|| format!("--ca {}", path.display()))?;
                    for c in CertificateDer::pem_slice_iter(&pem) {
                        roots.add(c.map_err(|e| anyhow::anyhow!("--ca {}: {e:?}", path.display()))?)?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.to_string()).with_context(|| format!("TLS server name `{host}`"))?;
        Ok(ClientTls { config: Arc::new(config), name })
    }

    /// A new client connection.
    ///
    /// # Errors
    /// rustls refused to start one.
    pub fn connection(&self) -> Result<ClientConnection> {
        Ok(ClientConnection::new(self.config.clone(), self.name.clone())?)
    }

    /// `GET path` over TLS, blocking: the response, whole.
    ///
    /// # Errors
    /// Connection, handshake or read failures.
    pub fn get(&self, addr: SocketAddr, path: &str) -> Result<String> {
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(super::spawn::STATUS_TIMEOUT))?;
        let mut s = rustls::StreamOwned::new(self.connection()?, sock);
        write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            // A server that closes without close_notify still sent it all.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// `--insecure`: accept any certificate (signatures still checked, so the
/// handshake is real), for self-signed test certificates.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
