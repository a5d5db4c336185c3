//! TLS sealing cost: a turn's frames for one client → TLS records in the
//! buffer its write goes from. Ours (`tls::Session::seal`, the record
//! layer on the secrets rustls hands over) against rustls's own buffered
//! path (`ServerConnection::writer()` + `write_tls`, which allocates a
//! buffer per record), on the same TLS 1.3 AES-256-GCM connection shape.
//!
//! Topology: single thread, no I/O; connections established in memory
//! against a rustls client once, before measuring.
//!
//! ```text
//!  frame bytes ──► Session::seal([frame, .., ..]) ──► outgoing Vec (reused) ──► sent(len)
//!  frame bytes ──► ServerConnection::writer().write ──► write_tls(&mut Vec)  (cleared)
//! ```
//!
//! Measured per iteration: one record for one 146-byte frame (a JSON ltp),
//! and one record for a turn of ten of them (1,460 bytes).

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tickcast::tls::{Acceptor, Cert, Session};

/// A self-signed pair for `localhost` in temp files, and its DER.
fn pair() -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let dir = std::env::temp_dir();
    let (c, k) = (
        dir.join(format!("tc-bench-{}.pem", std::process::id())),
        dir.join(format!("tc-bench-{}.key", std::process::id())),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.der().to_vec(), key.serialize_der())
}

fn client(cert: &[u8]) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(cert.to_vec().into()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(tickcast::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Ours, established.
fn ours(c: &std::path::Path, k: &std::path::Path, der: &[u8]) -> Session {
    let mut s = Acceptor::new(Cert::open("main", c, k).unwrap()).unwrap().session().unwrap();
    let mut cl = client(der);
    let mut plain = Vec::new();
    while !s.established() {
        let mut buf = Vec::new();
        while cl.wants_write() {
            cl.write_tls(&mut buf).unwrap();
        }
        s.receive(&buf, &mut plain).unwrap();
        let out = s.unsent().to_vec();
        s.sent(out.len());
        let mut rest = &out[..];
        while !rest.is_empty() {
            cl.read_tls(&mut rest).unwrap();
            cl.process_new_packets().unwrap();
        }
    }
    s
}

/// rustls's buffered server connection, established.
fn theirs(der: &[u8], key: &[u8]) -> ServerConnection {
    let config = ServerConfig::builder_with_provider(Arc::new(tickcast::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.to_vec().into()], PrivateKeyDer::Pkcs8(key.to_vec().into()))
        .unwrap();
    let mut s = ServerConnection::new(Arc::new(config)).unwrap();
    let mut cl = client(der);
    while s.is_handshaking() || cl.is_handshaking() || s.wants_write() {
        let mut buf = Vec::new();
        while cl.wants_write() {
            cl.write_tls(&mut buf).unwrap();
        }
        let mut rest = &buf[..];
        while !rest.is_empty() {
            s.read_tls(&mut rest).unwrap();
            s.process_new_packets().unwrap();
        }
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        let mut rest = &out[..];
        while !rest.is_empty() {
            cl.read_tls(&mut rest).unwrap();
            cl.process_new_packets().unwrap();
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let (cert, key, der, key_der) = pair();
    let frame = [0x81u8; 146];
    let turn: Vec<u8> = frame.repeat(10);
    let mut s = ours(&cert, &key, &der);
    let mut r = theirs(&der, &key_der);
    let mut sink = Vec::with_capacity(64 * 1024);
    let mut g = c.benchmark_group("tls/seal");
    for (name, bytes) in [("1x146B", &frame[..]), ("10x146B", &turn[..])] {
        g.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| {
                let n = s.seal([black_box(bytes), &[], &[]]).unwrap();
                let len = s.unsent().len();
                black_box(s.unsent());
                s.sent(len);
                n
            })
        });
        g.bench_function(format!("rustls-buffered/{name}"), |b| {
            b.iter(|| {
                r.writer().write_all(black_box(bytes)).unwrap();
                sink.clear();
                while r.wants_write() {
                    r.write_tls(&mut sink).unwrap();
                }
                black_box(&sink);
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_file(cert);
    let _ = std::fs::remove_file(key);
}

criterion_group!(benches, bench);
criterion_main!(benches);
