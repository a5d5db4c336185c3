//! One client connection: its socket, input buffer, and two output lanes.
//!
//! The *control lane* (acks, errors, pongs, gaps, heartbeats, close) and
//! the *data lane* (market data) are separate buffers written with one
//! `writev`: `[rest of a half-written data frame][control][data]`. So control
//! replies never wait behind queued data, and frames never interleave.

use std::io::{self, IoSlice, Write};

use mio::net::TcpStream;

use crate::encode::Format;
use crate::instrument::Slot;
use crate::ws::frame;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head.
    Handshake,
    /// Upgraded: exchanging WebSocket frames.
    Open,
    /// Sending what is queued (HTTP response or close frame), then closing.
    Closing,
}

/// Instruments changed since last taken, each once: a bitset by slot and
/// the list in order (no allocation once both have grown to the instruments
/// the client sees).
#[derive(Default)]
pub struct Batch {
    bits: Vec<u64>,
    slots: Vec<crate::instrument::Slot>,
}

impl Batch {
    /// `slot` changed.
    #[inline]
    pub fn mark(&mut self, slot: crate::instrument::Slot) {
        let (word, bit) = (slot.idx() / 64, 1u64 << (slot.idx() % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.slots.push(slot);
        }
    }

    /// Every instrument marked since the last take, into `out` (replaced;
    /// the two vectors trade places, so both keep their capacity).
    pub fn take(&mut self, out: &mut Vec<crate::instrument::Slot>) {
        out.clear();
        std::mem::swap(out, &mut self.slots);
        for s in out.iter() {
            self.bits[s.idx() / 64] &= !(1u64 << (s.idx() % 64));
        }
    }
}

/// What flushes wrote: bytes, and the system calls that wrote them (so
/// `/metrics` and `tickcast bench` can tell writes per delivered message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes the kernel took.
    pub bytes: u64,
    /// `write`/`writev` calls that took some (a would-block is not counted).
    pub calls: u64,
}

impl Written {
    fn took(&mut self, n: usize) {
        self.bytes += n as u64;
        self.calls += 1;
    }
}

/// `Conn::packet_frame` when no packet frame is open.
const NO_PACKET_FRAME: usize = usize::MAX;
/// A packet frame's header while it is gathered: a binary frame with a
/// 16-bit length (shrunk to 2 bytes when sealed small), then the count.
const PACKET_FRAME_HEAD: [u8; 6] = [0x80 | frame::OP_BINARY, 126, 0, 0, 0, 0];

/// Bits of `Conn::logged`: events already logged for this connection.
pub mod logged {
    /// Slow-consumer conflation.
    pub const SLOW: u8 = 1 << 0;
    /// A bad request.
    pub const BAD_REQUEST: u8 = 1 << 1;
}

/// One connection's state. Buffers stay unallocated until used, so an idle
/// connection costs little more than this struct and its socket.
pub struct Conn {
    /// The socket.
    pub sock: TcpStream,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Received, not yet parsed bytes.
    pub inbuf: Vec<u8>,
    /// Frames → messages (a fragmented message in progress).
    pub rx: crate::ws::message::Reassembler,
    /// Control lane: `ctrl[ctrl_pos..]` is unsent.
    ctrl: Vec<u8>,
    ctrl_pos: usize,
    /// Data lane: `data[data_pos..]` is unsent.
    data: Vec<u8>,
    data_pos: usize,
    /// A frame boundary in `data` at or before the next unknown one; frames
    /// are walked from here to find where the half-sent frame ends.
    data_mark: usize,
    /// Start of the packet frame being gathered at the end of `data`
    /// ([`Conn::data_packet`]), or `NO_PACKET_FRAME`.
    packet_frame: usize,
    /// Packets in it so far.
    packets: u16,
    /// Data frame format chosen at connect.
    pub format: Format,
    /// Client id (given or generated).
    pub client_id: String,
    /// The client chose its id: its subscriptions are saved when it goes.
    pub resumable: bool,
    /// Subscribed slots, in subscription order.
    pub slots: Vec<Slot>,
    /// Subscribed named channels, in subscription order.
    pub channels: Vec<crate::channel::ChannelId>,
    /// Queued for this turn's flush.
    pub dirty: bool,
    /// Data lane over the limit: ticks are held back (conflated).
    pub congested: bool,
    /// Time anything was last queued, ns (heartbeats go to idle clients).
    pub last_tx_ns: u64,
    /// Accept time, ns (handshake timeout).
    pub opened_ns: u64,
    /// When the last pong arrived, ns (0: none yet); keepalive checks.
    pub last_pong_ns: u64,
    /// `logged::*` bits.
    pub logged: u8,
    /// The upgrade was accepted (counted in `dialect_connections`).
    pub upgraded: bool,
    /// Distinguishes this connection from later ones reusing its id.
    pub gen: u64,
    /// A plain HTTP request is with the `http` thread: its answer is awaited.
    pub awaiting_http: bool,
    /// Client protocol (set at accept for the OpenAlgo listener, else at the upgrade).
    pub dialect: crate::dialect::Dialect,
    /// Who the API key belongs to (`None` until authenticated).
    pub user: Option<std::sync::Arc<crate::auth::User>>,
    /// The dialect's own state (taken out while it runs).
    pub proto: crate::dialect::Protocol,
    /// Batched delivery: instruments that ticked since the dialect last
    /// took them (`Format::Batched` subscriptions, watch-all).
    pub batch: Batch,
    /// The newest message of a held channel, until the dialect takes it.
    pub held: Option<std::sync::Arc<[u8]>>,
    /// TLS, on a listener that has it: the lanes are sealed into its
    /// records and the records written instead.
    pub tls: Option<Box<crate::tls::Session>>,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(sock: TcpStream, now_ns: u64, gen: u64) -> Conn {
        Conn {
            sock,
            phase: Phase::Handshake,
            inbuf: Vec::new(),
            rx: Default::default(),
            ctrl: Vec::new(),
            ctrl_pos: 0,
            data: Vec::new(),
            data_pos: 0,
            data_mark: 0,
            packet_frame: NO_PACKET_FRAME,
            packets: 0,
            format: Format::Json,
            client_id: String::new(),
            resumable: false,
            slots: Vec::new(),
            channels: Vec::new(),
            dirty: false,
            congested: false,
            last_tx_ns: now_ns,
            opened_ns: now_ns,
            last_pong_ns: 0,
            logged: 0,
            upgraded: false,
            gen,
            awaiting_http: false,
            dialect: crate::dialect::Dialect::Native,
            user: None,
            proto: crate::dialect::Protocol::None,
            batch: Batch::default(),
            held: None,
            tls: None,
        }
    }

    /// The key its subscriptions are saved under for a reconnect: the
    /// client id within its user, so one user cannot take over another's
    /// subscriptions by guessing an id.
    pub fn session_key(&self) -> String {
        let user = self.user.as_ref().map_or("", |u| &u.id);
        format!("{user}\u{1f}{}", self.client_id)
    }

    /// Queue raw bytes on the control lane (HTTP responses, whole frames).
    #[inline]
    pub fn ctrl_raw(&mut self, bytes: &[u8]) {
        self.ctrl.extend_from_slice(bytes);
    }

    /// Queue a text frame on the control lane.
    pub fn ctrl_text(&mut self, json: &[u8], now_ns: u64) {
        self.ctrl_frame(frame::OP_TEXT, json);
        self.last_tx_ns = now_ns;
    }

    /// Queue a frame of any opcode on the control lane.
    pub fn ctrl_frame(&mut self, opcode: u8, payload: &[u8]) {
        frame::append(&mut self.ctrl, opcode, payload);
    }

    /// Queue a complete frame on the data lane.
    #[inline]
    pub fn data_frame(&mut self, frame: &[u8], now_ns: u64) {
        debug_assert_eq!(self.phase, Phase::Open, "data after the close frame");
        self.seal();
        self.data.extend_from_slice(frame);
        self.last_tx_ns = now_ns;
    }

    /// Queue what an encoder built in `format`: a frame, or a packet for
    /// the packet frame being gathered.
    #[inline]
    pub fn data(&mut self, format: crate::encode::Format, bytes: &[u8], now_ns: u64) {
        if format == crate::encode::Format::Kite {
            self.data_packet(bytes, now_ns);
        } else {
            self.data_frame(bytes, now_ns);
        }
    }

    /// Add one length-prefixed packet to the packet frame at the end of the
    /// data lane (Kite's binary frame: a 2-byte count, then the packets),
    /// opening one if none is open. Every packet queued in one turn shares
    /// a frame; it is sealed before anything else is queued or written, and
    /// a new one starts before a frame would pass 64 KiB.
    pub fn data_packet(&mut self, packet: &[u8], now_ns: u64) {
        debug_assert_eq!(self.phase, Phase::Open, "data after the close frame");
        if self.packet_frame != NO_PACKET_FRAME {
            let payload = self.data.len() - self.packet_frame - 4 + packet.len();
            if payload > usize::from(u16::MAX) || self.packets == u16::MAX {
                self.seal();
            }
        }
        if self.packet_frame == NO_PACKET_FRAME {
            self.packet_frame = self.data.len();
            self.packets = 0;
            self.data.extend_from_slice(&PACKET_FRAME_HEAD);
        }
        self.data.extend_from_slice(packet);
        self.packets += 1;
        self.last_tx_ns = now_ns;
    }

    /// Finish the open packet frame, if any: its count, its length, and
    /// the 2-byte header form when it is small (the payload moves up two
    /// bytes; under 126 of them).
    #[inline]
    pub fn seal(&mut self) {
        if self.packet_frame == NO_PACKET_FRAME {
            return;
        }
        let start = std::mem::replace(&mut self.packet_frame, NO_PACKET_FRAME);
        let payload = self.data.len() - start - 4;
        self.data[start + 4..start + 6].copy_from_slice(&self.packets.to_be_bytes());
        if payload < 126 {
            self.data[start + 1] = payload as u8;
            self.data.copy_within(start + 4.., start + 2);
            self.data.truncate(self.data.len() - 2);
        } else {
            self.data[start + 2..start + 4].copy_from_slice(&(payload as u16).to_be_bytes());
        }
    }

    /// Unsent data-lane bytes.
    #[inline]
    pub fn data_pending(&self) -> usize {
        self.data.len() - self.data_pos
    }

    /// Unsent control-lane bytes.
    #[inline]
    pub fn ctrl_pending(&self) -> usize {
        self.ctrl.len() - self.ctrl_pos
    }

    /// Nothing left to send.
    pub fn is_drained(&self) -> bool {
        self.data_pending() == 0 && self.ctrl_pending() == 0 && self.tls.as_ref().is_none_or(|t| t.unsent().is_empty())
    }

    /// Queue a close frame and stop sending data: the unsent data lane is cut
    /// back to the end of the frame already on the wire (a close frame must
    /// be the last frame, and frames must not be cut).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.phase == Phase::Closing {
            return;
        }
        self.seal();
        let end = self.frame_end();
        self.data.truncate(end);
        frame::append_close(&mut self.ctrl, code, reason);
        self.phase = Phase::Closing;
        self.congested = false;
    }

    /// End of the data frame containing `data_pos` (= `data_pos` at a boundary).
    fn frame_end(&mut self) -> usize {
        while self.data_mark < self.data_pos {
            match frame::frame_len(&self.data[self.data_mark..]) {
                Some(n) => self.data_mark += n,
                None => break,
            }
        }
        self.data_mark.max(self.data_pos).min(self.data.len())
    }

    /// Write as much as the socket takes in one `writev`: the rest of a
    /// half-sent data frame, then the control lane, then data. Under TLS
    /// the same three parts are sealed into records (as few as fit) and
    /// those are written; sealed counts as sent for the lanes.
    ///
    /// Returns `Ok(true)` when everything was written, `Ok(false)` on
    /// WouldBlock (wait for a writable event).
    ///
    /// # Errors
    /// The socket failed: the connection is dead.
    pub fn flush(&mut self, written: &mut Written) -> io::Result<bool> {
        self.seal();
        loop {
            if let Some(tls) = &mut self.tls {
                while !tls.unsent().is_empty() {
                    match self.sock.write(tls.unsent()) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            written.took(n);
                            tls.sent(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.compact();
                            return Ok(false);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if self.is_drained() {
                self.compact();
                return Ok(true);
            }
            let split = if self.ctrl_pending() > 0 { self.frame_end() } else { self.data_pos };
            let (a, c) = (&self.data[self.data_pos..split], &self.data[split..]);
            let b = &self.ctrl[self.ctrl_pos..];
            let (la, lb) = (a.len(), b.len());
            let n = match &mut self.tls {
                Some(tls) => match tls.seal([a, b, c]) {
                    // Before the handshake is done the lanes wait.
                    Ok(0) => return Ok(true),
                    Ok(n) => n,
                    // The caller finds the TLS reason inside (`tls_failed`).
                    Err(e) => return Err(io::Error::other(e)),
                },
                None => match self.sock.write_vectored(&[IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        written.took(n);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.compact();
                        return Ok(false);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                },
            };
            self.advance(n, la, lb, split);
        }
    }

    /// `n` bytes of `[data_pos..split][ctrl][split..]` went out.
    fn advance(&mut self, mut n: usize, la: usize, lb: usize, split: usize) {
        let take_a = n.min(la);
        self.data_pos += take_a;
        n -= take_a;
        let take_b = n.min(lb);
        self.ctrl_pos += take_b;
        n -= take_b;
        if take_a == la && n > 0 {
            // Data written after the control lane: past `split`.
            self.data_pos = split + n;
        }
    }

    /// Reclaim sent bytes; give back memory a burst left behind.
    fn compact(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.ctrl_pos == self.ctrl.len() {
            self.ctrl.clear();
            self.ctrl_pos = 0;
            if self.ctrl.capacity() > KEEP {
                self.ctrl = Vec::new();
            }
        }
        if self.data_pos == self.data.len() {
            self.data.clear();
            self.data_pos = 0;
            self.data_mark = 0;
            if self.data.capacity() > KEEP {
                self.data = Vec::new();
            }
        } else if self.data_pos > self.data.len() / 2 && self.data_pos > KEEP {
            let mark = self.frame_end();
            self.data.drain(..self.data_pos);
            self.data_mark = mark - self.data_pos;
            self.data_pos = 0;
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP {
            self.inbuf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::Duration;

    /// A connected pair with tiny kernel buffers, so writes go partial.
    fn pair() -> (Conn, StdStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&l.local_addr().unwrap().into()).unwrap();
        let (server, _) = l.accept().unwrap();
        let server = socket2::Socket::from(server);
        server.set_send_buffer_size(4096).unwrap();
        server.set_nonblocking(true).unwrap();
        let client: StdStream = client.into();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (Conn::new(TcpStream::from_std(server.into()), 0, 1), client)
    }

    /// Parse server frames from `bytes`: (opcode, payload) each.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = frame::frame_len(bytes).expect("whole frames only");
            let hl = match bytes[1] {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            out.push((bytes[0] & 0x0f, bytes[hl..n].to_vec()));
            bytes = &bytes[n..];
        }
        out
    }

    /// Queue `n` 1000-byte binary frames (payload byte = index) and flush
    /// once, which the tiny buffers make partial; returns bytes written.
    fn queue_partially(conn: &mut Conn, n: u8) -> u64 {
        for i in 0..n {
            let mut f = Vec::new();
            frame::append(&mut f, frame::OP_BINARY, &[i; 1000]);
            conn.data_frame(&f, 0);
        }
        let mut written = Written::default();
        assert!(!conn.flush(&mut written).unwrap(), "tiny buffers: the first flush is partial");
        written.bytes
    }

    /// The reader reads, the server flushes, until everything is out.
    fn drain(conn: &mut Conn, client: &mut StdStream, bytes: &mut u64) -> Vec<u8> {
        let (mut got, mut buf, mut written) = (Vec::new(), [0u8; 65536], Written { bytes: *bytes, calls: 0 });
        while !conn.flush(&mut written).unwrap() || got.len() < written.bytes as usize {
            let n = client.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        *bytes = written.bytes;
        got
    }

    #[test]
    fn control_overtakes_queued_data_without_splitting_a_frame() {
        let (mut conn, mut client) = pair();
        conn.phase = Phase::Open;
        const N: u8 = 200;
        let mut written = queue_partially(&mut conn, N);
        assert!(written > 0 && written < 200 * 1004, "{written}");
        conn.ctrl_text(b"CTRL", 0);
        let fs = frames(&drain(&mut conn, &mut client, &mut written));
        assert_eq!(fs.len(), N as usize + 1, "every frame arrives whole");
        let ctrl_at = fs.iter().position(|(op, p)| *op == frame::OP_TEXT && p == b"CTRL").expect("control frame");
        assert!(ctrl_at < 100, "control frame went ahead of the queued data (at {ctrl_at} of {N})");
        let data: Vec<u8> = fs.iter().filter(|(op, _)| *op == frame::OP_BINARY).map(|(_, p)| p[0]).collect();
        assert_eq!(data, (0..N).collect::<Vec<_>>(), "data frames stay in order and intact");
    }

    #[test]
    fn close_cuts_unsent_data_at_a_frame_boundary() {
        let (mut conn, mut client) = pair();
        conn.phase = Phase::Open;
        let mut written = queue_partially(&mut conn, 200);
        conn.close(1013, "slow consumer");
        let fs = frames(&drain(&mut conn, &mut client, &mut written));
        let (op, p) = fs.last().unwrap();
        assert_eq!((*op, &p[..2]), (frame::OP_CLOSE, &1013u16.to_be_bytes()[..]), "close is the last frame");
        assert!(fs.len() < 100, "queued data after the close was dropped: {} frames", fs.len());
    }
    /// Packets queued in one turn share one frame, sealed with their count
    /// and the minimal header; a frame queued in between, a close or a
    /// flush seals it; a frame would pass 64 KiB starts another.
    #[test]
    fn packets_gather_into_sealed_frames() {
        let (mut conn, mut client) = pair();
        conn.phase = Phase::Open;
        let packet = |n: usize, b: u8| -> Vec<u8> { [&(n as u16).to_be_bytes()[..], &vec![b; n]].concat() };
        let count_and_packets =
            |ps: &[Vec<u8>]| -> Vec<u8> { [&(ps.len() as u16).to_be_bytes()[..], &ps.concat()].concat() };
        // Small: two packets, 2-byte header.
        let (a, b) = (packet(8, 1), packet(44, 2));
        conn.data_packet(&a, 0);
        conn.data_packet(&b, 0);
        // A frame in between seals it; then a big run (126..64 KiB), then
        // one past 64 KiB in total.
        let mut hb = Vec::new();
        frame::append(&mut hb, frame::OP_BINARY, &[0]);
        conn.data_frame(&hb, 0);
        let big: Vec<Vec<u8>> = (0..3).map(|i| packet(184, 10 + i)).collect();
        for p in &big {
            conn.data_packet(p, 0);
        }
        conn.ctrl_text(b"between", 0); // the control lane does not seal or split it
        let mut w = Written::default();
        conn.flush(&mut w).unwrap();
        let mut written = w.bytes;
        let huge: Vec<Vec<u8>> = (0..400).map(|i| packet(184, i as u8)).collect();
        for p in &huge {
            conn.data_packet(p, 0);
        }
        let fs = frames(&drain(&mut conn, &mut client, &mut written));
        let data: Vec<&Vec<u8>> = fs.iter().filter(|(op, _)| *op == frame::OP_BINARY).map(|(_, p)| p).collect();
        assert_eq!(data[0], &count_and_packets(&[a, b]));
        assert_eq!(data[1], &vec![0u8], "the heartbeat frame stands alone");
        assert_eq!(data[2], &count_and_packets(&big));
        let per_frame = usize::from(u16::MAX) / 186;
        assert_eq!(data[3], &count_and_packets(&huge[..per_frame]));
        assert_eq!(data[4], &count_and_packets(&huge[per_frame..]));
        assert_eq!(data.len(), 5);
        assert!(fs.iter().any(|(op, p)| *op == frame::OP_TEXT && p == b"between"));
        // A close seals the open frame and still comes last.
        conn.data_packet(&packet(8, 7), 0);
        conn.close(1000, "");
        let mut written = 0;
        let fs = frames(&drain(&mut conn, &mut client, &mut written));
        assert_eq!(fs.last().unwrap().0, frame::OP_CLOSE);
    }
}
