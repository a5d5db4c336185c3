//! The session against rustls's own client, in memory: every version and
//! cipher, both directions, key updates, close_notify, and bad input.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as suite;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite};

use super::*;

/// A CA-signed pair for `localhost` in temp files: (CA DER, cert path, key path).
fn pair() -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 7, 9);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = std::env::temp_dir();
    let tag = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let (c, k) = (dir.join(format!("tc-cert-{tag}.pem")), dir.join(format!("tc-key-{tag}.pem")));
    std::fs::write(&c, leaf.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (ca.der().to_vec(), c, k)
}

fn client(ca: &[u8], suites: &[SupportedCipherSuite]) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(ca.to_vec().into()).unwrap();
    let mut provider = super::provider();
    if !suites.is_empty() {
        provider.cipher_suites = suites.to_vec();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Move bytes both ways until neither side has anything to say.
fn pump(c: &mut ClientConnection, s: &mut Session, plain: &mut Vec<u8>) -> Result<Vec<u8>, Failure> {
    let mut got = Vec::new();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let moved = !buf.is_empty() || !s.unsent().is_empty();
        s.receive(&buf, plain)?;
        let out = s.unsent().to_vec();
        s.sent(out.len());
        let mut rest = &out[..];
        while !rest.is_empty() {
            c.read_tls(&mut rest).unwrap();
            c.process_new_packets().unwrap();
            let mut r = [0u8; 65536];
            while let Ok(n) = c.reader().read(&mut r) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&r[..n]);
            }
        }
        if !moved && !c.wants_write() {
            break;
        }
    }
    Ok(got)
}

fn established(suites: &[SupportedCipherSuite]) -> (ClientConnection, Session, Vec<u8>) {
    let (ca, cert, key) = pair();
    let acceptor = Acceptor::new(Cert::open("main", &cert, &key).unwrap()).unwrap();
    let (mut c, mut s, mut plain) = (client(&ca, suites), acceptor.session().unwrap(), Vec::new());
    c.writer().write_all(b"GET /stream HTTP/1.1\r\n\r\n").unwrap();
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert!(s.established() && !c.is_handshaking());
    assert_eq!(plain, b"GET /stream HTTP/1.1\r\n\r\n", "data sent with the handshake's end arrives");
    assert_eq!(c.alpn_protocol(), None, "no ALPN asked, none chosen");
    (c, s, plain)
}

#[test]
fn every_version_and_cipher_carries_data_both_ways() {
    for (suites, version) in [
        (vec![], rustls::ProtocolVersion::TLSv1_3),
        (vec![suite::TLS13_AES_128_GCM_SHA256], rustls::ProtocolVersion::TLSv1_3),
        (vec![suite::TLS13_CHACHA20_POLY1305_SHA256], rustls::ProtocolVersion::TLSv1_3),
        (vec![suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384], rustls::ProtocolVersion::TLSv1_2),
        (vec![suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], rustls::ProtocolVersion::TLSv1_2),
        (vec![suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256], rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (mut c, mut s, mut plain) = established(&suites);
        assert_eq!(s.version(), Some(version));
        // Server → client: three lanes, one big enough for several records.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut want = Vec::new();
        let mut parts: [&[u8]; 3] = [b"head", b"ctrl", &big];
        while parts.iter().any(|p| !p.is_empty()) {
            let n = s.seal(parts).unwrap();
            assert!(n > 0);
            let mut left = n;
            for p in parts.iter_mut() {
                let k = left.min(p.len());
                want.extend_from_slice(&p[..k]);
                *p = &p[k..];
                left -= k;
            }
        }
        assert_eq!(want.len(), 100_008);
        let got = pump(&mut c, &mut s, &mut plain).unwrap();
        assert!(got == want, "{version:?} {suites:?}: the client reads what was sealed");
        // Client → server, in pieces that cut records.
        plain.clear();
        c.writer().write_all(&big[..40_000]).unwrap();
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        for piece in buf.chunks(777) {
            s.receive(piece, &mut plain).unwrap();
        }
        assert!(plain == big[..40_000], "{version:?}: the server reads what the client wrote");
    }
}

#[test]
fn a_turn_of_small_frames_is_one_record() {
    let (mut c, mut s, mut plain) = established(&[]);
    assert_eq!(s.seal([b"a", b"bb", b"ccc"]).unwrap(), 6);
    assert_eq!(s.unsent().len(), 6 + 22, "one TLS 1.3 record: 5 header + 6 + 1 type + 16 tag");
    assert_eq!(pump(&mut c, &mut s, &mut plain).unwrap(), b"abbccc");
}

#[test]
fn key_updates_both_ways() {
    let (mut c, mut s, mut plain) = established(&[]);
    // The client updates its key and asks the server to update too.
    c.refresh_traffic_keys().unwrap();
    c.writer().write_all(b"after the client's update").unwrap();
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert!(plain.ends_with(b"after the client's update"));
    s.seal([b"after the server's update", b"", b""]).unwrap();
    assert_eq!(pump(&mut c, &mut s, &mut plain).unwrap(), b"after the server's update");
    // The server's own update at its key's limit.
    s.set_key_limit(3);
    for i in 0..10u8 {
        s.seal([&[i; 10], b"", b""]).unwrap();
    }
    let got = pump(&mut c, &mut s, &mut plain).unwrap();
    assert_eq!(got.len(), 100, "ten records across key updates");
}

#[test]
fn close_notify_both_ways() {
    let (mut c, mut s, mut plain) = established(&[]);
    assert!(s.close_notify() && !s.close_notify(), "queued once");
    pump(&mut c, &mut s, &mut plain).unwrap();
    let mut r = [0u8; 10];
    assert_eq!(c.reader().read(&mut r).unwrap(), 0, "the client sees a clean end");
    let (mut c, mut s, mut plain) = established(&[]);
    c.send_close_notify();
    let mut buf = Vec::new();
    c.write_tls(&mut buf).unwrap();
    assert_eq!(s.receive(&buf, &mut plain).unwrap(), session::Received { established: false, peer_closed: true });
}

#[test]
fn bad_input_is_refused_with_its_reason() {
    let (ca, cert, key) = pair();
    let acceptor = Acceptor::new(Cert::open("main", &cert, &key).unwrap()).unwrap();
    let mut plain = Vec::new();
    let e = acceptor.session().unwrap().receive(b"GET / HTTP/1.1\r\n\r\n", &mut plain).unwrap_err();
    assert_eq!(e, Failure::NotTls);
    let e = acceptor.session().unwrap().receive(&[22, 3, 1, 0, 5, 9, 9, 9, 9, 9], &mut plain).unwrap_err();
    assert_eq!(e.reason(), Reason::Protocol, "{e}");
    // A truncated ClientHello waits for more.
    let mut c = client(&ca, &[]);
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let mut s = acceptor.session().unwrap();
    assert_eq!(s.receive(&hello[..hello.len() / 2], &mut plain).unwrap(), session::Received::default());
    assert!(!s.established() && s.unsent().is_empty());
    // A client that does not trust the certificate says so.
    let other = pair().0;
    let (mut c, mut s) = (client(&other, &[]), acceptor.session().unwrap());
    let mut buf = Vec::new();
    c.write_tls(&mut buf).unwrap();
    s.receive(&buf, &mut plain).unwrap();
    c.read_tls(&mut s.unsent()).unwrap();
    assert!(c.process_new_packets().is_err());
    buf.clear();
    c.write_tls(&mut buf).unwrap();
    let e = s.receive(&buf, &mut plain).unwrap_err();
    assert_eq!(e.reason(), Reason::PeerAlert, "{e}");
    // Garbage after the handshake.
    let (_c, mut s, mut plain) = established(&[]);
    let e = s
        .receive(&[23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], &mut plain);
    assert_eq!(e.unwrap_err().reason(), Reason::Protocol);
}

#[test]
fn pairs_are_checked_at_load_and_reload_keeps_the_old_on_failure() {
    let (_, cert, key) = pair();
    let (_, cert2, key2) = pair();
    let c = Cert::open("main", &cert, &key).unwrap();
    assert_eq!(c.not_after(), 1_941_321_600, "2031-07-09T00:00:00Z");
    let e = Cert::open("main", &cert, &key2).unwrap_err().to_string();
    assert!(e.contains("does not go with certificate"), "{e}");
    let e = format!("{:#}", Cert::open("main", std::path::Path::new("/nonexistent.pem"), &key).unwrap_err());
    assert!(e.contains("/nonexistent.pem") && e.contains("cannot read"), "{e}");
    let e = Cert::open("main", &key, &key).unwrap_err().to_string();
    assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
    let e = Cert::open("main", &cert, &cert).unwrap_err().to_string();
    assert!(e.contains("no PEM private key"), "{e}");
    // A reload with a broken pair keeps serving the old one.
    std::fs::copy(&key2, &key).unwrap();
    assert!(c.reload().is_err());
    std::fs::copy(&cert2, &cert).unwrap();
    c.reload().unwrap();
    for p in [cert, key, cert2, key2] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_peer_cannot_make_us_rekey_without_end() {
    let (mut c, mut s, mut plain) = established(&[]);
    // Up to 32 key updates in a row are followed and answered…
    for _ in 0..32 {
        c.refresh_traffic_keys().unwrap();
        c.writer().write_all(b"").unwrap();
    }
    pump(&mut c, &mut s, &mut plain).unwrap();
    c.writer().write_all(b"data resets the count").unwrap();
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert!(plain.ends_with(b"data resets the count"));
    // …the 33rd without data between them ends the connection.
    let mut buf = Vec::new();
    for _ in 0..33 {
        c.refresh_traffic_keys().unwrap();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
    }
    let e = s.receive(&buf, &mut plain).unwrap_err();
    assert_eq!(e, Failure::Protocol("too many key updates without data".into()));
}

#[test]
fn tls12_at_its_record_limit_refuses_to_seal() {
    let (_c, mut s, _) = established(&[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]);
    s.set_key_limit(4); // the handshake's Finished was record 0
    for n in 0..3 {
        assert!(s.seal([b"data", b"", b""]).is_ok(), "record {}", n + 1);
    }
    assert_eq!(s.seal([b"data", b"", b""]).unwrap_err(), Failure::KeyLimit);
    assert_eq!(s.seal([b"data", b"", b""]).unwrap_err(), Failure::KeyLimit, "and stays refused");
}

#[test]
fn certificate_times_that_are_not_dates_are_errors() {
    // Certificate → tbs → [0] version, serial, signature, issuer, validity.
    let cert = |not_after: &[u8]| {
        let tlv = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
        let validity = tlv(0x30, &[tlv(0x17, b"250101000000Z"), tlv(0x17, not_after)].concat());
        let tbs = [tlv(0xa0, &tlv(2, &[2])), tlv(2, &[1]), tlv(0x30, &[]), tlv(0x30, &[]), validity].concat();
        tlv(0x30, &tlv(0x30, &tbs))
    };
    assert_eq!(certs::not_after(&cert(b"310709000000Z")).unwrap(), 1_941_321_600);
    for bad in [&b"311309000000Z"[..], b"310709250000Z", b"3107090000\xc3\xa9", b"31070900Z", b"31070900000AZ"] {
        assert!(certs::not_after(&cert(bad)).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}
