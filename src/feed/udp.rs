//! `udp://HOST:PORT[?iface=IP]`: TCF1, one packet per datagram, unicast or
//! multicast (a multicast HOST joins the group on `iface`, default any).
//!
//! The socket gets a large receive buffer (bursts arrive faster than one
//! wake-up). On its own thread, each wake-up drains it until WouldBlock
//! before waking the workers once; polled by a worker, each turn reads a
//! bounded batch (so the worker's ring cannot overflow before it drains).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use mio::{Events, Interest, Poll, Token};

use std::sync::atomic::Ordering;

use super::{publish_packet, stopping, FeedCtx, PacketSeq, Polled, Source, STATE_DOWN, STATE_LIVE};
use crate::feed::tcf1::Merger;
use crate::instrument::Registry;
use crate::tick::now_ns;

/// Largest datagram (UDP maximum payload).
const MAX_DATAGRAM: usize = 65_536;
/// Kernel receive buffer asked for.
const RCVBUF: usize = 8 << 20;

/// A bound UDP TCF1 source.
pub struct Udp {
    sock: mio::net::UdpSocket,
    addr: SocketAddr,
    merger: Merger,
    seqs: PacketSeq,
    buf: Box<[u8]>,
}

impl Udp {
    /// Bind `addr` (joining the group when it is multicast).
    ///
    /// # Errors
    /// Bind or join failures, naming the address.
    pub fn bind(addr: SocketAddr, iface: Option<Ipv4Addr>, registry: &Registry) -> Result<Udp> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        let _ = sock.set_recv_buffer_size(RCVBUF);
        let multicast = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_multicast() => Some(ip),
            _ => None,
        };
        let bind_to: SocketAddr = match multicast {
            Some(_) => (Ipv4Addr::UNSPECIFIED, addr.port()).into(),
            None => addr,
        };
        sock.bind(&bind_to.into()).with_context(|| format!("feed udp://{addr}: cannot bind {bind_to}"))?;
        if let Some(group) = multicast {
            let iface = iface.unwrap_or(Ipv4Addr::UNSPECIFIED);
            sock.join_multicast_v4(&group, &iface)
                .with_context(|| format!("feed udp://{addr}: cannot join {group} on {iface}"))?;
        }
        sock.set_nonblocking(true)?;
        let std: std::net::UdpSocket = sock.into();
        // Port 0 binds a free port; report the one actually bound.
        let addr = SocketAddr::new(addr.ip(), std.local_addr()?.port());
        Ok(Udp {
            sock: mio::net::UdpSocket::from_std(std),
            addr,
            merger: Merger::new(registry),
            seqs: PacketSeq::default(),
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        })
    }

    /// The bound address (the group for multicast).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Source for Udp {
    fn kind(&self) -> &'static str {
        "udp"
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        let mut run = || -> io::Result<()> {
            let mut poll = Poll::new()?;
            self.register(poll.registry(), Token(0))?;
            let mut events = Events::with_capacity(4);
            ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
            while !stopping(&ctx.shutdown) {
                poll.poll(&mut events, Some(Duration::from_millis(50)))?;
                self.read_ready(&mut ctx, usize::MAX)?;
            }
            Ok(())
        };
        if let Err(e) = run() {
            log::error!("feed {}: {e}", ctx.health.name);
        }
        ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
    }

    fn polled(self: Box<Self>) -> Result<Box<dyn Polled>, Box<dyn Source>> {
        Ok(self)
    }
}

impl Polled for Udp {
    fn register(&mut self, registry: &mio::Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE)
    }

    fn read_ready(&mut self, ctx: &mut FeedCtx, budget: usize) -> io::Result<bool> {
        let mut more = true;
        for _ in 0..budget {
            match self.sock.recv(&mut self.buf) {
                Ok(n) => publish_packet(ctx, &mut self.merger, &mut self.seqs, &self.buf[..n], now_ns()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        ctx.fanout.flush();
        Ok(more)
    }
}
