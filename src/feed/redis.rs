//! `redis://HOST:PORT`: consume ticks and named channels from Redis pub/sub,
//! as published by another tickcast's `--publish` (see `mirror`).
//!
//! Ticks arrive as TCF1 packets on `tcf1:<token>`; anything else is a named
//! channel with an opaque payload. The source subscribes on Redis only to
//! what local clients want (read from the workers' interest bits, polled
//! every 50 ms) and unsubscribes when the last one leaves. A lost
//! connection is retried with exponential backoff and jitter; after a
//! reconnect every wanted channel is subscribed again, and the outage shows
//! in `/status` as `reconnects` and per-channel `packet_gaps`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tcf1::Merger;
use super::{backoff, publish_packet, stopping, FeedCtx, PacketSeq, Source, STATE_CONNECTING, STATE_DOWN, STATE_LIVE};
use crate::channel::ChannelId;
use crate::instrument::{Registry, Slot};
use crate::tick::now_ns;

/// Prefix of the Redis channels that carry TCF1 ticks.
pub const TICK_PREFIX: &str = "tcf1:";
/// How often local interest is re-read.
const POLL: Duration = Duration::from_millis(50);
/// Most messages handled before interest is re-read and workers woken.
const ROUND_MESSAGES: usize = 256;
/// Longest such round.
const ROUND_TIME: Duration = Duration::from_millis(5);
/// Largest payload accepted; larger ones are dropped and counted as rejected.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A Redis consumer.
pub struct RedisFeed {
    url: String,
    merger: Merger,
}

impl RedisFeed {
    /// A source for `url` (`redis://HOST:PORT`); connects when run.
    pub fn new(url: String, registry: &Registry) -> RedisFeed {
        RedisFeed { url, merger: Merger::new(registry) }
    }
}

/// The Redis channels local clients want now.
fn wanted(ctx: &FeedCtx) -> HashSet<String> {
    let mut out = HashSet::new();
    let interest = ctx.fanout.interest();
    for (slot, ins) in ctx.registry.iter() {
        if interest.get(Slot(slot.0)) != 0 {
            out.insert(format!("{TICK_PREFIX}{}", ins.token));
        }
    }
    if let Some(ch) = &ctx.channels {
        for (id, name) in ctx.channel_table.all() {
            if ch.interest().get(id) != 0 {
                out.insert(name.to_string());
            }
        }
    }
    out
}

impl RedisFeed {
    /// One connection's life: subscribe to what is wanted, relay messages,
    /// follow interest changes. Returns on error or shutdown.
    fn session(&mut self, ctx: &mut FeedCtx, seqs: &mut HashMap<String, PacketSeq>) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut ps = con.as_pubsub();
        ps.set_read_timeout(Some(POLL))?;
        let mut subscribed: HashSet<String> = HashSet::new();
        // A new session has nothing subscribed: silence counts afresh from
        // its first subscriptions.
        ctx.health.wanted(0, now_ns());
        ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
        log::info!("feed {}: connected to {}", ctx.health.name, self.url);
        while !stopping(&ctx.shutdown) {
            let want = wanted(ctx);
            for ch in want.difference(&subscribed) {
                ps.subscribe(ch)?;
            }
            for ch in subscribed.difference(&want) {
                ps.unsubscribe(ch)?;
            }
            subscribed = want;
            let ticks_wanted = subscribed.iter().filter(|c| c.starts_with(TICK_PREFIX)).count();
            ctx.health.wanted(ticks_wanted as u64, now_ns());
            // Bounded, so interest changes and worker wake-ups keep up even
            // when a message arrives within every read timeout.
            let round = std::time::Instant::now();
            for _ in 0..ROUND_MESSAGES {
                let msg = match ps.get_message() {
                    Ok(m) => m,
                    Err(e) if e.is_timeout() => break,
                    Err(e) => return Err(e),
                };
                let name = msg.get_channel_name();
                let payload = msg.get_payload_bytes();
                let recv_ns = now_ns();
                if payload.len() > MAX_PAYLOAD {
                    ctx.health.rejected.fetch_add(1, Ordering::Relaxed);
                } else if name.starts_with(TICK_PREFIX) {
                    let seq = seqs.entry(name.to_string()).or_default();
                    publish_packet(ctx, &mut self.merger, seq, payload, recv_ns);
                } else if let (Ok(id), Some(ch)) = (ctx.channel_table.id(name), ctx.channels.as_mut()) {
                    let m = ctx.channel_table.message(ChannelId(id.0), name, payload, recv_ns);
                    ch.publish(&m);
                    ctx.health.published(0, recv_ns);
                }
                if round.elapsed() > ROUND_TIME {
                    break;
                }
            }
            ctx.fanout.flush();
            if let Some(ch) = ctx.channels.as_mut() {
                ch.flush();
            }
        }
        Ok(())
    }
}

impl Source for RedisFeed {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn address(&self) -> String {
        self.url.clone()
    }

    fn publishes_channels(&self) -> bool {
        true
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        let mut attempt = 0;
        let mut seqs = HashMap::new();
        let mut connected_before = false;
        while !stopping(&ctx.shutdown) {
            ctx.health.state.store(STATE_CONNECTING, Ordering::Relaxed);
            if connected_before {
                ctx.health.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            match self.session(&mut ctx, &mut seqs) {
                Ok(()) => break,
                Err(e) => {
                    if ctx.health.state.load(Ordering::Relaxed) == STATE_LIVE {
                        connected_before = true;
                        attempt = 0;
                    }
                    let wait = backoff(attempt, BACKOFF_MIN, BACKOFF_MAX);
                    attempt += 1;
                    log::warn!("feed {}: {e}; retrying in {wait:?}", ctx.health.name);
                    let until = std::time::Instant::now() + wait;
                    while std::time::Instant::now() < until && !stopping(&ctx.shutdown) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
    }
}
