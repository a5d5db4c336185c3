//! Certificates: a listener's PEM pair loaded with errors that say what is
//! wrong, served through a resolver that a reload swaps atomically (new
//! handshakes get the new pair, open connections are untouched), and the
//! certificate's expiry for `/status` and `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A loaded pair and when its certificate expires.
pub struct Loaded {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The end-entity certificate's notAfter, Unix seconds.
    pub not_after: i64,
}

/// Load and check a certificate chain and its private key.
///
/// # Errors
/// A file that is missing or unreadable, holds no PEM certificate or key,
/// or a key that does not belong to the certificate.
pub fn load(cert: &Path, key: &Path) -> Result<Loaded> {
    let read =
        |p: &Path, what: &str| std::fs::read(p).with_context(|| format!("TLS {what} {}: cannot read it", p.display()));
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: not valid PEM ({e:?})", cert.display()))?;
    if chain.is_empty() {
        bail!("TLS certificate {}: no `BEGIN CERTIFICATE` block in it", cert.display());
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!("TLS key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it ({e:?})", key.display())
    })?;
    let provider = super::provider();
    let not_after = not_after(&chain[0])
        .with_context(|| format!("TLS certificate {}: cannot read its validity", cert.display()))?;
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        anyhow::anyhow!("TLS key {} does not go with certificate {}: {e}", key.display(), cert.display())
    })?;
    Ok(Loaded { key: Arc::new(certified), not_after })
}

/// A listener's certificate: the files it came from and what is served now.
pub struct Cert {
    /// Which listener (`main`, `openalgo`, `kite`).
    pub listener: &'static str,
    /// The PEM files.
    pub paths: (PathBuf, PathBuf),
    current: RwLock<Arc<CertifiedKey>>,
    not_after: std::sync::atomic::AtomicI64,
}

impl Cert {
    /// Load `cert` and `key` for `listener`.
    ///
    /// # Errors
    /// See [`load`].
    pub fn open(listener: &'static str, cert: &Path, key: &Path) -> Result<Arc<Cert>> {
        let l = load(cert, key)?;
        Ok(Arc::new(Cert {
            listener,
            paths: (cert.to_owned(), key.to_owned()),
            current: RwLock::new(l.key),
            not_after: l.not_after.into(),
        }))
    }

    /// Read the files again; on success new handshakes use the new pair.
    /// On failure the old pair stays.
    ///
    /// # Errors
    /// See [`load`].
    pub fn reload(&self) -> Result<()> {
        let l = load(&self.paths.0, &self.paths.1)?;
        *self.current.write() = l.key;
        self.not_after.store(l.not_after, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// notAfter of the certificate served now, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cert").field("listener", &self.listener).field("paths", &self.paths).finish()
    }
}

/// Serves whatever pair the [`Cert`] holds now, whatever name is asked for:
/// a client that does not trust it for that name says so with an alert,
/// which is counted.
#[derive(Debug)]
pub struct Resolver(pub Arc<Cert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().clone())
    }
}

/// The notAfter of a DER certificate, Unix seconds: `Certificate →
/// tbsCertificate → [version] serial signature issuer validity`.
///
/// # Errors
/// Not the DER a certificate is.
pub fn not_after(cert: &[u8]) -> Result<i64> {
    let (_, cert, _) = der(cert, 0x30)?;
    let (_, mut tbs, _) = der(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der(tbs, 0xa0)?.2;
    }
    for _ in 0..3 {
        tbs = der_any(tbs)?.2; // serial, signature, issuer
    }
    let (_, validity, _) = der(tbs, 0x30)?;
    let (_, _, rest) = der_any(validity)?; // notBefore
    let (tag, time, _) = der_any(rest)?;
    let s = std::str::from_utf8(time).context("time is not text")?;
    let (year, rest) = match tag {
        0x17 if s.len() == 13 && s.is_ascii() => {
            let yy: i64 = s[..2].parse()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 15 && s.is_ascii() => (s[..4].parse()?, &s[4..]),
        _ => bail!("unexpected time encoding"),
    };
    let n = |i: usize| -> Result<i8> { Ok(rest.get(i..i + 2).context("short time")?.parse()?) };
    let date = jiff::civil::Date::new(year as i16, n(0)?, n(2)?)?;
    let date = date.to_datetime(jiff::civil::Time::new(n(4)?, n(6)?, n(8)?, 0)?);
    Ok(date.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second())
}

/// One DER element with tag `want`: (tag, contents, rest).
fn der(b: &[u8], want: u8) -> Result<(u8, &[u8], &[u8])> {
    let e = der_any(b)?;
    if e.0 != want {
        bail!("expected DER tag {want:#x}, found {:#x}", e.0);
    }
    Ok(e)
}

/// One DER element: (tag, contents, rest).
fn der_any(b: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first().context("truncated")?;
    let (&first, mut b) = b.split_first().context("truncated")?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            bail!("bad length");
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        b = &b[n..];
        len
    };
    if b.len() < len {
        bail!("truncated");
    }
    Ok((tag, &b[..len], &b[len..]))
}
