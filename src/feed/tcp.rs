//! `tcp://HOST:PORT`: listen for feed handlers that stream TCF1 packets
//! back to back. Several publishers at once, one event loop; each has its
//! own buffer and `packet_seq` tracking, so a publisher that disconnects
//! mid-packet loses only its own partial packet.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::tcf1::{self, DropReason, Merger};
use super::{publish_packet, read_stream, stopping, FeedCtx, PacketSeq, Source, STATE_DOWN, STATE_LIVE};
use crate::instrument::Registry;
use crate::tick::now_ns;

const LISTENER: Token = Token(usize::MAX);
/// Most bytes one publisher may have buffered: the largest legal packet.
const MAX_BUFFERED: usize = tcf1::HEADER_LEN + u16::MAX as usize * tcf1::DEPTH_LEN;

/// One connected feed handler.
struct Publisher {
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

impl Source for Tcp {
    fn kind(&self) -> &'static str {
        "tcp"
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        let mut run = || -> io::Result<()> {
            let mut poll = Poll::new()?;
            poll.registry().register(&mut self.listener, LISTENER, Interest::READABLE)?;
            let mut events = Events::with_capacity(64);
            let mut pubs: Vec<Option<Publisher>> = Vec::new();
            let mut chunk = vec![0u8; 256 * 1024];
            ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
            while !stopping(&ctx.shutdown) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))?;
                for ev in events.iter() {
                    if ev.token() == LISTENER {
                        while let Ok((mut stream, peer)) = self.listener.accept() {
                            let id = pubs.iter().position(Option::is_none).unwrap_or_else(|| {
                                pubs.push(None);
                                pubs.len() - 1
                            });
                            poll.registry().register(&mut stream, Token(id), Interest::READABLE)?;
                            pubs[id] = Some(Publisher { stream, buf: Vec::new(), seqs: PacketSeq::default() });
                            ctx.health.reconnects.fetch_add(1, Ordering::Relaxed);
                            log::info!("feed {}: publisher {peer} connected", ctx.health.name);
                        }
                        continue;
                    }
                    let id = ev.token().0;
                    let Some(p) = pubs.get_mut(id).and_then(Option::as_mut) else { continue };
                    if !serve(p, &mut ctx, &mut self.merger, &mut chunk) {
                        let mut p = pubs[id].take().expect("present above");
                        let _ = poll.registry().deregister(&mut p.stream);
                    }
                }
                ctx.fanout.flush();
            }
            Ok(())
        };
        if let Err(e) = run() {
            log::error!("feed {}: {e}", ctx.health.name);
        }
        ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
    }
}
