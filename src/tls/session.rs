//! One TLS connection, sans-IO: ciphertext read from the socket goes in,
//! plaintext comes out into the connection's input; plaintext lanes go in,
//! ciphertext waits in [`Session::unsent`] for the socket.
//!
//! The handshake runs in rustls's unbuffered connection (its records land
//! straight in our outgoing buffer); once it is done, rustls hands over the
//! traffic secrets and [`Records`] seals and opens records itself.

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::ServerConfig;

use super::records::{content, Fault, Records, MAX_PLAIN};
use super::Failure;

/// Most plaintext sealed per [`Session::seal`] call, so ciphertext waiting
/// for the socket stays bounded and the plaintext lanes (where frames can
/// still be cut at a close) hold the rest.
const SEAL_BUDGET: usize = 4 * MAX_PLAIN;
/// Ciphertext buffers over this are given back once drained (above what
/// one full seal budget needs, so a busy client keeps its buffer).
const KEEP: usize = 2 * SEAL_BUDGET;

enum Phase {
    Handshake(Box<UnbufferedServerConnection>),
    Open(Box<Records>),
    Done,
}

/// What [`Session::receive`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The handshake finished with this input.
    pub established: bool,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

/// A TLS connection's state and buffers.
pub struct Session {
    phase: Phase,
    /// Ciphertext received and not yet processed (a partial record).
    incoming: Vec<u8>,
    /// Ciphertext to send: `outgoing[sent..]`.
    outgoing: Vec<u8>,
    sent: usize,
    /// The first byte has come and was a handshake record.
    hello: bool,
    /// close_notify is queued.
    notified: bool,
    /// The peer sent close_notify: later input is ignored.
    peer_closed: bool,
}

impl Session {
    /// A connection starting its handshake.
    ///
    /// # Errors
    /// rustls refused the configuration.
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        Ok(Session {
            phase: Phase::Handshake(Box::new(UnbufferedServerConnection::new(config)?)),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            hello: false,
            notified: false,
            peer_closed: false,
        })
    }

    /// The handshake is done: application data flows.
    pub fn established(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// The negotiated version (`None` during the handshake).
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.phase {
            Phase::Open(r) => Some(r.version()),
            _ => None,
        }
    }

    /// Take bytes read from the socket; application data is appended to
    /// `plain`, handshake records to send go to [`Session::unsent`].
    ///
    /// # Errors
    /// The connection must be dropped, for the reason given.
    pub fn receive(&mut self, bytes: &[u8], plain: &mut Vec<u8>) -> Result<Received, Failure> {
        let mut got = Received::default();
        if self.peer_closed {
            return Ok(got);
        }
        self.incoming.extend_from_slice(bytes);
        if let Phase::Handshake(conn) = &mut self.phase {
            // A ClientHello record starts with 22; HTTP or noise does not.
            if !self.hello && !bytes.is_empty() {
                if bytes[0] != content::HANDSHAKE {
                    return Err(Failure::NotTls);
                }
                self.hello = true;
            }
            if !handshake(conn, &mut self.incoming, &mut self.outgoing, plain)? {
                return Ok(got);
            }
            let Phase::Handshake(conn) = std::mem::replace(&mut self.phase, Phase::Done) else { unreachable!() };
            let (secrets, kernel) =
                conn.dangerous_into_kernel_connection().map_err(|e| Failure::Protocol(e.to_string()))?;
            self.phase = Phase::Open(Box::new(Records::new(secrets, kernel).map_err(fault)?));
            got.established = true;
        }
        if let Phase::Open(records) = &mut self.phase {
            match records.open(&mut self.incoming, plain, &mut self.outgoing) {
                Ok(o) => {
                    self.incoming.drain(..o.used);
                }
                Err(Fault::PeerClosed) => {
                    self.incoming = Vec::new();
                    self.peer_closed = true;
                    got.peer_closed = true;
                }
                Err(f) => return Err(fault(f)),
            }
        }
        if self.incoming.is_empty() && self.incoming.capacity() > KEEP {
            self.incoming = Vec::new();
        }
        Ok(got)
    }

    /// Ciphertext waiting for the socket.
    pub fn unsent(&self) -> &[u8] {
        &self.outgoing[self.sent..]
    }

    /// `n` bytes of [`Session::unsent`] were written.
    pub fn sent(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
            if self.outgoing.capacity() > KEEP {
                self.outgoing = Vec::new();
            }
        }
    }

    /// Seal the concatenation of `parts` into as few records as fit, up to
    /// a budget; returns the plaintext bytes taken (0 before the handshake
    /// is done).
    ///
    /// # Errors
    /// The connection must be closed ([`Failure::KeyLimit`] on TLS 1.2).
    pub fn seal(&mut self, parts: [&[u8]; 3]) -> Result<usize, Failure> {
        let Phase::Open(records) = &mut self.phase else { return Ok(0) };
        let (mut part, mut off, mut taken) = (0, 0, 0);
        while taken < SEAL_BUDGET {
            // Gather up to one record's worth from where the last ended.
            let mut pieces: [&[u8]; 3] = [&[]; 3];
            let (mut n, mut room) = (0, MAX_PLAIN);
            while part < 3 && room > 0 {
                let rest = &parts[part][off..];
                let take = rest.len().min(room);
                if take > 0 {
                    pieces[n] = &rest[..take];
                    n += 1;
                    room -= take;
                }
                if take == rest.len() {
                    part += 1;
                    off = 0;
                } else {
                    off += take;
                }
            }
            if n == 0 {
                break;
            }
            records.seal(content::DATA, &pieces[..n], &mut self.outgoing).map_err(fault)?;
            taken += MAX_PLAIN - room;
        }
        Ok(taken)
    }

    /// Make the sending key change after `n` records (tests reach the
    /// limit without sealing 2^24 records).
    #[cfg(test)]
    pub fn set_key_limit(&mut self, n: u64) {
        if let Phase::Open(r) = &mut self.phase {
            r.limit = n;
        }
    }

    /// Queue close_notify, once, when established; `true` when queued now.
    pub fn close_notify(&mut self) -> bool {
        match &mut self.phase {
            Phase::Open(records) if !self.notified => {
                self.notified = true;
                records.close_notify(&mut self.outgoing);
                true
            }
            _ => false,
        }
    }
}

fn fault(f: Fault) -> Failure {
    match f {
        Fault::PeerClosed => Failure::Closed,
        Fault::Alert(d) => Failure::PeerAlert(d),
        Fault::Protocol(why) => Failure::Protocol(why.to_string()),
        Fault::KeyLimit => Failure::KeyLimit,
    }
}

/// Drive rustls through what `incoming` holds. Returns `true` when the
/// handshake is complete and nothing is left for rustls to send (the
/// secrets can be taken), `false` when it needs more input.
fn handshake(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> Result<bool, Failure> {
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
        let done = match state.map_err(Failure::from_rustls)? {
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(Failure::from_rustls)?;
                    discard += rec.discard;
                    plain.extend_from_slice(rec.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut e) => {
                let start = outgoing.len();
                outgoing.resize(start + 4096, 0);
                loop {
                    match e.encode(&mut outgoing[start..]) {
                        Ok(n) => {
                            outgoing.truncate(start + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(s)) => outgoing.resize(start + s.required_size, 0),
                        Err(EncodeError::AlreadyEncoded) => {
                            outgoing.truncate(start);
                            break;
                        }
                    }
                }
                None
            }
            // What was encoded waits in `outgoing`, sent exactly once.
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(false),
            ConnectionState::WriteTraffic(_) => Some(true),
            ConnectionState::PeerClosed | ConnectionState::Closed => return Err(Failure::Closed),
            _ => return Err(Failure::Protocol("unexpected handshake state".into())),
        };
        incoming.drain(..discard);
        if let Some(done) = done {
            return Ok(done);
        }
    }
}
