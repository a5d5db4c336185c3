//! The TLS record layer after the handshake, sans-IO: seal plaintext into
//! records and open received records, in place, in the connection's own
//! buffers.
//!
//! rustls does the handshake and keeps the traffic secrets (its kernel
//! connection API, made for kTLS); this layer does what the kernel would:
//! AEAD with `ring` on TLS 1.3 and TLS 1.2 records (AES-GCM and
//! ChaCha20-Poly1305). Sealing writes the record header, copies the
//! plaintext parts after it and encrypts them where they lie, so a turn's
//! frames for one client become one record in the buffer the socket is
//! written from, and nothing is allocated per record. RFC 8446 §5 and
//! RFC 5246 §6.2.3.3 / RFC 7905 give the formats.

use ::ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

/// Most plaintext in one record (RFC 8446 §5.1).
pub const MAX_PLAIN: usize = 16 * 1024;
/// Record header: type, version, length.
const HEADER: usize = 5;
/// AEAD tag.
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce in each record.
const EXPLICIT_NONCE: usize = 8;
/// Largest ciphertext a peer may send: plaintext plus 256 (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAIN + 256;

/// Content types (RFC 8446 §5.1).
pub mod content {
    /// change_cipher_spec
    pub const CCS: u8 = 20;
    /// alert
    pub const ALERT: u8 = 21;
    /// handshake
    pub const HANDSHAKE: u8 = 22;
    /// application_data
    pub const DATA: u8 = 23;
}

/// `key_update` handshake message type (RFC 8446 §4.6.3).
const KEY_UPDATE: u8 = 24;

/// Why a connection's records cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent close_notify: nothing more will come.
    PeerClosed,
    /// The peer sent a fatal alert (its description code).
    Alert(u8),
    /// A record that does not decrypt or parse, or a message not allowed
    /// after the handshake (renegotiation, change_cipher_spec).
    Protocol(&'static str),
    /// TLS 1.2 reached the cipher's record limit (TLS 1.3 updates its key
    /// instead): the connection must be closed.
    KeyLimit,
}

/// One direction's AEAD state.
struct Direction {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(secrets: ConnectionTrafficSecrets, seq: u64) -> Result<Direction, Fault> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key.as_ref(), iv.as_ref()),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key.as_ref(), iv.as_ref()),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key.as_ref(), iv.as_ref())
            }
            _ => return Err(Fault::Protocol("unsupported cipher")),
        };
        let key = UnboundKey::new(alg, key).map_err(|_| Fault::Protocol("bad traffic key"))?;
        let iv: [u8; 12] = iv.try_into().map_err(|_| Fault::Protocol("bad traffic iv"))?;
        Ok(Direction { key: LessSafeKey::new(key), iv, seq })
    }

    /// `iv` XOR the 64-bit sequence number, big-endian, right-aligned.
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

/// What a TLS 1.2 record is sealed as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// TLS 1.3: opaque type 23, inner content type after the plaintext.
    Tls13,
    /// TLS 1.2 AES-GCM: an 8-byte explicit nonce before the ciphertext.
    Tls12Gcm,
    /// TLS 1.2 ChaCha20-Poly1305 (RFC 7905): nonce from the sequence number.
    Tls12Chacha,
}

/// An established connection's record layer.
pub struct Records {
    shape: Shape,
    tx: Direction,
    rx: Direction,
    /// Records a key may seal before it must change (the suite's limit,
    /// less a margin).
    pub(super) limit: u64,
    /// `key_update`s since the last application data (a peer may not
    /// make us re-key and answer without end: rustls allows 32 too).
    key_updates: u8,
    kernel: KernelConnection<ServerConnectionData>,
}

/// Most `key_update`s in a row without application data between them.
const MAX_KEY_UPDATES: u8 = 32;

/// The result of opening records: plaintext went to the caller's buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of input used (whole records); the rest is a partial record.
    pub used: usize,
}

impl Records {
    /// Take over from rustls once the handshake is done.
    ///
    /// # Errors
    /// A cipher suite this layer does not implement.
    pub fn new(
        secrets: rustls::ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, Fault> {
        let suite = kernel.negotiated_cipher_suite();
        let shape = match (kernel.protocol_version(), &secrets.tx.1) {
            (ProtocolVersion::TLSv1_3, _) => Shape::Tls13,
            (_, ConnectionTrafficSecrets::Chacha20Poly1305 { .. }) => Shape::Tls12Chacha,
            _ => Shape::Tls12Gcm,
        };
        let limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Ok(Records {
            shape,
            tx: Direction::new(secrets.tx.1, secrets.tx.0)?,
            rx: Direction::new(secrets.rx.1, secrets.rx.0)?,
            limit: limit.saturating_sub(limit / 16),
            key_updates: 0,
            kernel,
        })
    }

    /// `"TLSv1_3"` or `"TLSv1_2"`.
    pub fn version(&self) -> ProtocolVersion {
        self.kernel.protocol_version()
    }

    /// Bytes a record adds to its plaintext.
    pub fn overhead(&self) -> usize {
        match self.shape {
            Shape::Tls13 => HEADER + 1 + TAG,
            Shape::Tls12Gcm => HEADER + EXPLICIT_NONCE + TAG,
            Shape::Tls12Chacha => HEADER + TAG,
        }
    }

    /// Seal `parts` (together at most [`MAX_PLAIN`] bytes) as one record of
    /// `typ`, appended to `out`. On TLS 1.3 a key nearing its limit is
    /// replaced after this record (a `key_update` record goes first).
    ///
    /// # Errors
    /// [`Fault::KeyLimit`] on TLS 1.2 at the limit (nothing appended).
    pub fn seal(&mut self, typ: u8, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), Fault> {
        if self.tx.seq >= self.limit {
            if self.shape != Shape::Tls13 {
                return Err(Fault::KeyLimit);
            }
            self.update_tx_key(out)?;
        }
        self.seal_one(typ, parts, out);
        Ok(())
    }

    fn seal_one(&mut self, typ: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
        let plain: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(plain <= MAX_PLAIN);
        let start = out.len();
        let (outer, body_len) = match self.shape {
            Shape::Tls13 => (content::DATA, plain + 1 + TAG),
            Shape::Tls12Gcm => (typ, EXPLICIT_NONCE + plain + TAG),
            Shape::Tls12Chacha => (typ, plain + TAG),
        };
        out.extend_from_slice(&[outer, 3, 3]);
        out.extend_from_slice(&(body_len as u16).to_be_bytes());
        let nonce = self.tx.nonce();
        if self.shape == Shape::Tls12Gcm {
            out.extend_from_slice(&nonce[4..]);
        }
        let body = out.len();
        for p in parts {
            out.extend_from_slice(p);
        }
        if self.shape == Shape::Tls13 {
            out.push(typ);
        }
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&out[start..start + HEADER]);
        let aad12 = tls12_aad(self.tx.seq, typ, plain);
        let aad: &[u8] = if self.shape == Shape::Tls13 { &header } else { &aad12 };
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[body..])
            .expect("the plaintext is within AEAD limits");
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
    }

    /// Send `key_update` (update_not_requested) under the old key, then
    /// switch to the next one.
    fn update_tx_key(&mut self, out: &mut Vec<u8>) -> Result<(), Fault> {
        self.seal_one(content::HANDSHAKE, &[&[KEY_UPDATE, 0, 0, 1, 0]], out);
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(|_| Fault::Protocol("key update failed"))?;
        self.tx = Direction::new(secrets, seq)?;
        Ok(())
    }

    /// Seal a close_notify alert.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        self.seal_one(content::ALERT, &[&[1, 0]], out);
    }

    /// Open the whole records at the front of `input` (decrypted in place),
    /// appending application data to `plain`; key updates the peer asks
    /// for are answered into `out`.
    ///
    /// # Errors
    /// The connection cannot go on (see [`Fault`]); `plain` holds what came
    /// before.
    pub fn open(&mut self, input: &mut [u8], plain: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Opened, Fault> {
        let mut used = 0;
        while input.len() - used >= HEADER {
            let h = &input[used..used + HEADER];
            let (outer, len) = (h[0], u16::from_be_bytes([h[3], h[4]]) as usize);
            if h[1] != 3 || len > MAX_CIPHERTEXT {
                return Err(Fault::Protocol("not a TLS record"));
            }
            if input.len() - used - HEADER < len {
                break;
            }
            let mut header = [0u8; HEADER];
            header.copy_from_slice(h);
            let body = &mut input[used + HEADER..used + HEADER + len];
            used += HEADER + len;
            let (typ, payload) = self.open_one(outer, &header, body)?;
            match typ {
                content::DATA => {
                    self.key_updates = 0;
                    plain.extend_from_slice(payload);
                }
                content::ALERT => match payload {
                    [_, 0] => return Err(Fault::PeerClosed),
                    // Warnings go on: TLS 1.2's (no_renegotiation…) and
                    // TLS 1.3's user_canceled (RFC 8446 §6.1).
                    [1, _] if self.shape != Shape::Tls13 => {}
                    [_, 90] => {}
                    [_, d] => return Err(Fault::Alert(*d)),
                    _ => return Err(Fault::Protocol("malformed alert")),
                },
                content::HANDSHAKE => self.handshake_message(payload, out)?,
                content::CCS => return Err(Fault::Protocol("change_cipher_spec after the handshake")),
                _ => return Err(Fault::Protocol("unknown record type")),
            }
        }
        Ok(Opened { used })
    }

    /// Decrypt one record body in place: (inner content type, plaintext).
    fn open_one<'a>(&mut self, outer: u8, header: &[u8; HEADER], body: &'a mut [u8]) -> Result<(u8, &'a [u8]), Fault> {
        const BAD: Fault = Fault::Protocol("a record that does not decrypt");
        let (nonce, aad12, sealed) = match self.shape {
            Shape::Tls13 => {
                if outer != content::DATA {
                    return Err(Fault::Protocol("unencrypted record after the handshake"));
                }
                (self.rx.nonce(), [0; 13], body)
            }
            Shape::Tls12Gcm => {
                if body.len() < EXPLICIT_NONCE + TAG {
                    return Err(BAD);
                }
                let mut nonce = [0u8; 12];
                nonce[..4].copy_from_slice(&self.rx.iv[..4]);
                nonce[4..].copy_from_slice(&body[..EXPLICIT_NONCE]);
                let plain = body.len() - EXPLICIT_NONCE - TAG;
                (nonce, tls12_aad(self.rx.seq, outer, plain), &mut body[EXPLICIT_NONCE..])
            }
            Shape::Tls12Chacha => {
                if body.len() < TAG {
                    return Err(BAD);
                }
                let plain = body.len() - TAG;
                (self.rx.nonce(), tls12_aad(self.rx.seq, outer, plain), body)
            }
        };
        let aad: &[u8] = if self.shape == Shape::Tls13 { header } else { &aad12 };
        let plain =
            self.rx.key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed).map_err(|_| BAD)?;
        self.rx.seq += 1;
        if self.shape != Shape::Tls13 {
            return Ok((outer, plain));
        }
        // TLS 1.3 inner plaintext: content, type, zero padding; at most
        // 2^14 + 1 bytes in all (RFC 8446 §5.4).
        if plain.len() > MAX_PLAIN + 1 {
            return Err(Fault::Protocol("an oversized record"));
        }
        let end = plain.iter().rposition(|&b| b != 0).ok_or(Fault::Protocol("a record with no content type"))?;
        Ok((plain[end], &plain[..end]))
    }

    /// A handshake record after the handshake: TLS 1.3 `key_update` is
    /// followed (and answered when asked), one per record and it must end
    /// the record (RFC 8446 §5.1), at most [`MAX_KEY_UPDATES`] in a row;
    /// anything else (renegotiation, a session ticket from a client, an
    /// empty record) ends the connection.
    fn handshake_message(&mut self, msg: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
        if self.shape != Shape::Tls13 {
            return Err(Fault::Protocol("renegotiation is not supported"));
        }
        let &[typ, a, b, c, request] = msg else {
            return Err(Fault::Protocol("a handshake record that is not one whole key_update"));
        };
        if typ != KEY_UPDATE || [a, b, c] != [0, 0, 1] || request > 1 {
            return Err(Fault::Protocol("an unexpected handshake message"));
        }
        self.key_updates += 1;
        if self.key_updates > MAX_KEY_UPDATES {
            return Err(Fault::Protocol("too many key updates without data"));
        }
        let (seq, secrets) = self.kernel.update_rx_secret().map_err(|_| Fault::Protocol("key update failed"))?;
        self.rx = Direction::new(secrets, seq)?;
        if request == 1 {
            self.update_tx_key(out)?;
        }
        Ok(())
    }
}

/// TLS 1.2 additional data: seq, type, version, plaintext length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}
