//! The event loop shared by the sources that listen for peers streaming
//! to them (the TCP feed, the publish port): accept peers into a slab,
//! hand each readable one to the source, drop the ones that are gone, and
//! wake the workers after every batch of events, until shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{stopping, FeedCtx, STATE_DOWN, STATE_LIVE};

const LISTENER: Token = Token(usize::MAX);

/// A source that accepts peers on a listener and reads what they send.
pub(crate) trait Listening {
    /// Per-peer state (its stream, buffers, counters).
    type Peer;
    /// Read buffer size shared by all peers.
    const CHUNK: usize;
    /// The listener to accept on.
    fn listener(&mut self) -> &mut TcpListener;
    /// State for a newly accepted peer.
    fn accept(&mut self, stream: TcpStream, addr: SocketAddr, ctx: &FeedCtx) -> Self::Peer;
    /// The peer's stream (for (de)registration).
    fn stream(peer: &mut Self::Peer) -> &mut TcpStream;
    /// Read and apply what `peer` sent; false when it is gone.
    fn serve(&mut self, peer: &mut Self::Peer, ctx: &mut FeedCtx, chunk: &mut [u8]) -> bool;
}

/// Run `src` until shutdown; the feed is `live` meanwhile and `down` after.
pub(crate) fn run<S: Listening>(src: &mut S, ctx: &mut FeedCtx) {
    if let Err(e) = event_loop(src, ctx) {
        log::error!("feed {}: {e}", ctx.health.name);
    }
    ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
}

fn event_loop<S: Listening>(src: &mut S, ctx: &mut FeedCtx) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(src.listener(), LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut peers: Vec<Option<S::Peer>> = Vec::new();
    let mut chunk = vec![0u8; S::CHUNK];
    ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
    while !stopping(&ctx.shutdown) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((stream, addr)) = src.listener().accept() {
                    let free = peers.iter().position(Option::is_none);
                    let id = match free {
                        Some(free) => free,
                        None => {
                            peers.push(None);
                            peers.len() - 1
                        }
                    };
                    let mut peer = src.accept(stream, addr, ctx);
                    poll.registry().register(S::stream(&mut peer), Token(id), Interest::READABLE)?;
                    peers[id] = Some(peer);
                    ctx.health.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let id = ev.token().0;
            let Some(mut peer) = peers.get_mut(id).and_then(Option::take) else { continue };
            if src.serve(&mut peer, ctx, &mut chunk) {
                peers[id] = Some(peer);
            } else {
                let _ = poll.registry().deregister(S::stream(&mut peer));
            }
        }
        ctx.fanout.flush();
        if let Some(c) = ctx.channels.as_mut() {
            c.flush();
        }
    }
    Ok(())
}
