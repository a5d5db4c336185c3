//! `replay:PATH[?speed=N|max]`: play a file of TCF1 packets (back to back,
//! as `tickcast record` writes them). `speed=1` keeps the original pacing
//! (from the records' `ts_ns`), `speed=2` twice as fast, `speed=max` as fast
//! as the rings take them. Deterministic: the same file gives the same
//! ticks, in the same order, with the same `seq` and `ts`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::tcf1::{self, Merger};
use super::{publish_packet, stopping, FeedCtx, PacketSeq, Source, STATE_DOWN, STATE_LIVE};
use crate::instrument::Registry;
use crate::tick::now_ns;

/// A loaded replay file.
pub struct Replay {
    path: PathBuf,
    data: Vec<u8>,
    /// Playback speed factor; `None` = as fast as possible.
    speed: Option<f64>,
    merger: Merger,
}

impl Replay {
    /// Load `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn open(path: PathBuf, speed: Option<f64>, registry: &Registry) -> Result<Replay> {
        let data = std::fs::read(&path).with_context(|| format!("feed replay:{}: cannot read", path.display()))?;
        Ok(Replay { path, data, speed, merger: Merger::new(registry) })
    }
}

/// Source timestamp of the first record of a packet, if it has one.
fn first_ts(packet: &[u8]) -> Option<u64> {
    (packet.len() >= tcf1::HEADER_LEN + 24)
        .then(|| u64::from_le_bytes(packet[tcf1::HEADER_LEN + 16..tcf1::HEADER_LEN + 24].try_into().expect("8 bytes")))
}

impl Source for Replay {
    fn kind(&self) -> &'static str {
        "replay"
    }

    fn address(&self) -> String {
        self.path.display().to_string()
    }

    fn run(mut self: Box<Self>, mut ctx: FeedCtx) {
        ctx.health.state.store(STATE_LIVE, Ordering::Relaxed);
        let data = std::mem::take(&mut self.data);
        let mut seqs = PacketSeq::default();
        let (mut at, mut t0, start, mut packets) = (0, None, Instant::now(), 0u64);
        while at < data.len() && !stopping(&ctx.shutdown) {
            let n = match tcf1::packet_len(&data[at..]) {
                Some(Ok(n)) => n,
                Some(Err(why)) => {
                    ctx.health.dropped(why);
                    log::error!("feed {}: {} at byte {at}: stopping the replay", ctx.health.name, why.name());
                    break;
                }
                None => {
                    ctx.health.dropped(tcf1::DropReason::Short);
                    log::warn!("feed {}: file ends inside a packet at byte {at}", ctx.health.name);
                    break;
                }
            };
            let packet = &data[at..at + n];
            if let (Some(speed), Some(ts)) = (self.speed, first_ts(packet)) {
                let base = *t0.get_or_insert(ts);
                let due = Duration::from_nanos((ts.saturating_sub(base) as f64 / speed) as u64);
                while start.elapsed() < due && !stopping(&ctx.shutdown) {
                    ctx.fanout.flush();
                    std::thread::sleep(due.saturating_sub(start.elapsed()).min(Duration::from_millis(10)));
                }
            }
            if self.speed.is_none() {
                // As fast as the rings take them, but never past a full ring.
                let records = usize::from(u16::from_le_bytes([packet[4], packet[5]]));
                while ctx.fanout.min_free() < records && !stopping(&ctx.shutdown) {
                    ctx.fanout.flush();
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            publish_packet(&mut ctx, &mut self.merger, &mut seqs, packet, now_ns());
            packets += 1;
            if self.speed.is_some() || packets % 64 == 0 {
                ctx.fanout.flush();
            }
            at += n;
        }
        ctx.fanout.flush();
        log::info!("feed {}: replay finished ({} bytes)", ctx.health.name, at);
        ctx.health.state.store(STATE_DOWN, Ordering::Relaxed);
    }
}
