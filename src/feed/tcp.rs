//! `tcp://HOST:PORT`: listen for feed handlers that stream TCF1 packets
//! back to back. Several publishers at once, one event loop; each has its
//! own buffer and `packet_seq` tracking, so a publisher that disconnects
//! mid-packet loses only its own partial packet.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};

use super::listen::{self, Listening};
use super::tcf1::{self, DropReason, Merger};
use super::{publish_packet, read_stream, FeedCtx, PacketSeq, Source};
use crate::instrument::Registry;
use crate::tick::now_ns;

/// Most bytes one publisher may have buffered: the largest legal packet.
const MAX_BUFFERED: usize = tcf1::HEADER_LEN + u16::MAX as usize * tcf1::DEPTH_LEN;

/// One connected feed handler.
pub(crate) struct Publisher {
    stream: TcpStream,
    buf: Vec<u8>,
    seqs: PacketSeq,
}

/// A listening TCP TCF1 source.
pub struct Tcp {
    listener: TcpListener,
    addr: SocketAddr,
    merger: Merger,
}

impl Tcp {
    /// Listen on `addr`.
    ///
    /// # Errors
    /// Bind failures, naming the address.
    pub fn bind(addr: SocketAddr, registry: &Registry) -> Result<Tcp> {
        let listener = TcpListener::bind(addr).with_context(|| format!("feed tcp://{addr}: cannot listen"))?;
        let addr = listener.local_addr()?;
        Ok(Tcp { listener, addr, merger: Merger::new(registry) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Read what `p` has; publish every complete packet. Returns false when
/// the publisher is gone (EOF, error, or a stream that cannot be framed).
fn serve(p: &mut Publisher, ctx: &mut FeedCtx, merger: &mut Merger, chunk: &mut [u8]) -> bool {
    let seqs = &mut p.seqs;
    let alive = read_stream(&mut p.stream, &mut p.buf, chunk, |buf| {
        let recv_ns = now_ns();
        let mut at = 0;
        while at < buf.len() {
            match tcf1::packet_len(&buf[at..]) {
                Some(Ok(n)) => {
                    publish_packet(ctx, merger, seqs, &buf[at..at + n], recv_ns);
                    at += n;
                }
                None => break,
                Some(Err(why)) => {
                    // Bad magic or kind: this stream cannot be resynchronised.
                    ctx.health.dropped(why);
                    log::warn!("feed {}: dropping a publisher: {}", ctx.health.name, why.name());
                    return false;
                }
            }
        }
        buf.drain(..at);
        buf.len() <= MAX_BUFFERED
    });
    if !alive && !p.buf.is_empty() && tcf1::packet_len(&p.buf).is_none() {
        ctx.health.dropped(DropReason::Short); // its partial last packet
    }
    alive
}

impl Listening for Tcp {
    type Peer = Publisher;
    const CHUNK: usize = 256 * 1024;

    fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    fn accept(&mut self, stream: TcpStream, addr: SocketAddr, ctx: &FeedCtx) -> Publisher {
        log::info!("feed {}: publisher {addr} connected", ctx.health.name);
        Publisher { stream, buf: Vec::new(), seqs: PacketSeq::default() }
    }

    fn stream(peer: &mut Publisher) -> &mut TcpStream {
        &mut peer.stream
    }

    fn serve(&mut self, peer: &mut Publisher, ctx: &mut FeedCtx, chunk: &mut [u8]) -> bool {
        serve(peer, ctx, &mut self.merger, chunk)
    }
}

impl Source for Tcp {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        listen::run(&mut *self, &mut ctx);
    }
}
