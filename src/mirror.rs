//! `--publish redis://HOST:PORT`: mirror every ingested tick and channel
//! message to Redis pub/sub, so one feed-side instance can serve many edge
//! instances (`--feed redis://…`).
//!
//! The mirror is one more consumer of the feed rings, interested in every
//! slot and channel. Ticks go out as one TCF1 packet (tick + depth record)
//! on `tcf1:<token>`, with a `packet_seq` per token so an edge can count
//! what it missed; channel messages go out with their original payload on
//! the channel's own name. Commands are pipelined per drained batch. A lost
//! connection is retried with backoff; what arrives meanwhile is dropped
//! and counted (pub/sub keeps nothing for absent subscribers anyway).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::channel::{ChannelMsg, Channels};
use crate::feed::redis::TICK_PREFIX;
use crate::feed::{tcf1, FeedHealth, STATE_CONNECTING, STATE_DOWN, STATE_LIVE};
use crate::tick::{now_ns, Tick};

/// Most messages pipelined in one round trip.
const BATCH: usize = 4096;

/// The mirror thread's state.
pub struct Mirror {
    /// `redis://HOST:PORT`.
    pub url: String,
    /// One ring per feed.
    pub rings: Vec<rtrb::Consumer<Tick>>,
    /// One ring per channel publisher.
    pub chan_rings: Vec<rtrb::Consumer<ChannelMsg>>,
    /// Channel names.
    pub channels: Arc<Channels>,
    /// `ticks`: messages published; `drops`: lost while disconnected.
    pub health: Arc<FeedHealth>,
    /// Per-slot packet sequence numbers.
    pub packet_seq: Vec<u64>,
}

impl Mirror {
    /// Run until `shutdown`.
    pub fn run(mut self, shutdown: Arc<AtomicBool>) {
        let mut attempt = 0u32;
        let mut ever = false;
        while !shutdown.load(Ordering::Relaxed) {
            self.health.state.store(STATE_CONNECTING, Ordering::Relaxed);
            let client = redis::Client::open(self.url.as_str());
            match client.and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2))) {
                Ok(mut con) => {
                    // A hung (not closed) Redis must not block the mirror forever.
                    let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = con.set_write_timeout(Some(Duration::from_secs(2)));
                    if ever {
                        self.health.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever = true;
                    attempt = 0;
                    self.health.state.store(STATE_LIVE, Ordering::Relaxed);
                    if let Err(e) = self.pump(&mut con, &shutdown) {
                        log::warn!("publish {}: {e}", self.url);
                        continue;
                    }
                }
                Err(e) => {
                    log::warn!("publish {}: {e}", self.url);
                    attempt += 1;
                    let wait =
                        Duration::from_millis(100).saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(5));
                    let until = std::time::Instant::now() + wait;
                    while std::time::Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                        // Disconnected: drain and count what cannot be sent.
                        let lost = self.discard();
                        self.health.drops[tcf1::DropReason::Short as usize].fetch_add(lost, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        self.health.state.store(STATE_DOWN, Ordering::Relaxed);
    }

    /// Drop what cannot be sent. Ticks still take a `packet_seq`, so an
    /// edge sees the hole as `packet_gaps` once the link is back.
    fn discard(&mut self) -> u64 {
        let mut n = 0;
        for r in &mut self.rings {
            while let Ok(t) = r.pop() {
                self.packet_seq[t.slot as usize] += 1;
                n += 1;
            }
        }
        for r in &mut self.chan_rings {
            while r.pop().is_ok() {
                n += 1;
            }
        }
        n
    }

    fn pump(&mut self, con: &mut redis::Connection, shutdown: &AtomicBool) -> redis::RedisResult<()> {
        let mut packet = Vec::with_capacity(tcf1::HEADER_LEN + tcf1::TICK_LEN + tcf1::DEPTH_LEN);
        while !shutdown.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            let mut n = 0;
            for r in &mut self.rings {
                while n < BATCH {
                    let Ok(t) = r.pop() else { break };
                    let seq = &mut self.packet_seq[t.slot as usize];
                    *seq += 1;
                    packet.clear();
                    tcf1::write_packet(&mut packet, *seq, std::slice::from_ref(&t));
                    pipe.cmd("PUBLISH").arg(format!("{TICK_PREFIX}{}", t.token)).arg(&packet[..]).ignore();
                    n += 1;
                }
            }
            for r in &mut self.chan_rings {
                while n < BATCH {
                    let Ok(m) = r.pop() else { break };
                    if let Some(name) = self.channels.name(m.channel) {
                        pipe.cmd("PUBLISH").arg(&*name).arg(&m.data[..]).ignore();
                        n += 1;
                    }
                }
            }
            if n == 0 {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            pipe.query::<()>(con)?;
            self.health.published(n as u64, now_ns());
        }
        Ok(())
    }
}
