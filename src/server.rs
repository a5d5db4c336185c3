//! Start-up and shut-down: build the registry, the hub (rings, interest,
//! last values), the listeners, the feed threads (or hand pollable feeds to
//! the workers, `--feed-poll worker`), the worker threads (pinned when
//! asked), and stop them all on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{Config, FeedPoll};
use crate::dialect::Dialect;
use crate::feed::{self, FeedCtx, FeedHealth};
use crate::instrument::Registry;
use crate::metrics::{Counters, WorkerGauges};
use crate::ring::{Hub, WorkerSignal};
use crate::session::Sessions;
use crate::shared::Shared;
use crate::worker::{Worker, WorkerSetup};
use crate::SERVER_NAME;

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    signals: Vec<Arc<WorkerSignal>>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

/// Bind one `SO_REUSEPORT` listener per worker on the same address. The
/// port is first probed without `SO_REUSEPORT`, so a port held by another
/// process fails with "address in use" instead of being silently shared.
fn listeners(addr: SocketAddr, n: usize) -> Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |addr: SocketAddr, reuse_port: bool| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&addr.into())?;
        Ok(s)
    };
    if addr.port() != 0 {
        drop(bind(addr, false).with_context(|| format!("cannot listen on {addr} (is another server using it?)"))?);
    }
    let first = bind(addr, true).with_context(|| format!("cannot listen on {addr}"))?;
    let actual = first.local_addr()?.as_socket().context("listener has no socket address")?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(bind(actual, true).with_context(|| format!("cannot add a listener on {actual}"))?);
    }
    let out = out
        .into_iter()
        .map(|s| {
            s.listen(4096)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .collect::<std::io::Result<_>>()
        .context("listen")?;
    Ok((out, actual))
}

fn pin(cpus: &[usize], index: usize, what: &str) {
    if cpus.is_empty() {
        return;
    }
    let id = cpus[index % cpus.len()];
    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
        log::warn!("could not pin {what} to CPU {id}");
    }
}

/// With `--cpus`, the control plane (the `http` thread) runs on the first
/// CPU outside the list, so a scrape never competes with a pinned worker;
/// unpinned when the list takes every CPU (or there is none).
fn pin_off(cpus: &[usize], what: &str) {
    if cpus.is_empty() {
        return;
    }
    let spare = core_affinity::get_core_ids().into_iter().flatten().find(|c| !cpus.contains(&c.id));
    if let Some(core) = spare {
        if !core_affinity::set_for_current(core) {
            log::warn!("could not pin {what} to CPU {}", core.id);
        }
    }
}

impl Server {
    /// Load everything and start the threads.
    ///
    /// # Errors
    /// Unreadable master, unbindable address, thread or epoll failures.
    pub fn start(config: Config) -> Result<Server> {
        let registry = Arc::new(match &config.master {
            Some(p) => Registry::load(p)?,
            None => Registry::bundled(),
        });
        let tls = crate::tls::Tls::open(&config)?;
        let auth = match &config.auth_file {
            Some(path) => crate::auth::Auth::load(path)?,
            None => crate::auth::Auth::open(),
        };
        // Dialect ports: each worker gets its share of every one that is on.
        let mut ports: Vec<Vec<(Dialect, std::net::TcpListener)>> = (0..config.workers).map(|_| Vec::new()).collect();
        let mut port_addr = |addr: Option<SocketAddr>, dialect: Dialect, what: &str| -> Result<Option<SocketAddr>> {
            let Some(addr) = addr else { return Ok(None) };
            let (ls, a) = listeners(addr, config.workers).with_context(|| what.to_string())?;
            for (w, l) in ls.into_iter().enumerate() {
                ports[w].push((dialect, l));
            }
            Ok(Some(a))
        };
        let what = "the OpenAlgo listener (--openalgo-listen ADDR, or off to disable it)";
        let openalgo_addr = match port_addr(config.openalgo_listen, Dialect::OpenAlgo, what) {
            Err(e) if config.openalgo_listen_default => {
                log::warn!(
                    "{e:#}; the default OpenAlgo listener stays off (give --openalgo-listen ADDR to require it)"
                );
                None
            }
            other => other?,
        };
        let kite_addr = port_addr(config.kite_listen, Dialect::Kite, "the Kite listener (--kite-listen ADDR)")?;
        let (listeners, local_addr) = listeners(config.listen, config.workers)?;
        let mut polls = Vec::new();
        let mut signals = Vec::new();
        for _ in 0..config.workers {
            let poll = mio::Poll::new().context("creating epoll")?;
            let waker = mio::Waker::new(poll.registry(), mio::Token(usize::MAX - 1)).context("creating waker")?;
            signals.push(Arc::new(WorkerSignal {
                sleeping: AtomicBool::new(false),
                overrun: AtomicBool::new(false),
                waker,
            }));
            polls.push(poll);
        }
        // The Redis mirror is one more ring consumer, after the workers.
        let mirror_poll = match &config.publish {
            Some(_) => {
                let poll = mio::Poll::new().context("creating epoll")?;
                let waker = mio::Waker::new(poll.registry(), mio::Token(0)).context("creating waker")?;
                signals.push(Arc::new(WorkerSignal {
                    sleeping: AtomicBool::new(false),
                    overrun: AtomicBool::new(false),
                    waker,
                }));
                Some(poll)
            }
            None => None,
        };
        let mut sources = feed::build(&config.feeds, &registry)?;
        if let Some(addr) = config.publish_listen {
            sources.push(Box::new(feed::publish::PublishPort::bind(addr, &registry)?));
        }
        let names = feed::names(&sources);
        let shm = match &config.shm {
            Some(opts) => {
                let region = crate::shm::Region::create(opts, &registry, names.clone())
                    .with_context(|| format!("the shared-memory region (--shm {})", opts.path.display()))?;
                log::info!(
                    "shm: publishing every tick to {} ({} ring(s) × {} records, {} MiB)",
                    opts.path.display(),
                    names.len(),
                    opts.capacity,
                    region.layout().total >> 20
                );
                Some(region)
            }
            None => None,
        };
        let mut hub =
            Hub::with_channels(registry.len(), config.max_channels, signals.clone(), config.ring_capacity, shm);
        // A limited upstream: workers admit instruments against its capacity.
        if let Some(feed::spec::FeedSpec::Kite(k)) =
            config.feeds.iter().find(|f| matches!(f, feed::spec::FeedSpec::Kite(_)))
        {
            hub.demand = Some(Arc::new(crate::demand::Demand::new(registry.len(), k.connections * k.instruments)));
        }
        if mirror_poll.is_some() {
            for (slot, _) in registry.iter() {
                hub.interest.set(slot, config.workers);
            }
            for ch in 0..config.max_channels {
                hub.channel_interest.set(ch, config.workers);
            }
        }
        let feeds: Vec<Arc<FeedHealth>> =
            sources.iter().zip(names).map(|(s, n)| Arc::new(FeedHealth::new(n, s.kind(), s.address()))).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            hub,
            channels: Arc::new(crate::channel::Channels::new(config.max_channels)),
            mirror: config
                .publish
                .as_ref()
                .map(|url| Arc::new(FeedHealth::new("publish".into(), "redis", url.clone()))),
            feeds: feeds.clone(),
            counters: Counters::default(),
            gauges: (0..config.workers).map(|_| WorkerGauges::default()).collect(),
            sessions: Sessions::new(config.session_ttl),
            shutdown: shutdown.clone(),
            open_connections: AtomicU64::new(0),
            market_open: Arc::new(AtomicBool::new(config.market_hours.is_open(crate::tick::now_ns()))),
            started: Instant::now(),
            auth,
            dialect_connections: Default::default(),
            openalgo_addr,
            kite_addr,
            tls,
            config: config.clone(),
        });

        let mut rings: Vec<Vec<rtrb::Consumer<crate::tick::Tick>>> = (0..signals.len()).map(|_| Vec::new()).collect();
        let mut chan_rings: Vec<Vec<rtrb::Consumer<crate::channel::ChannelMsg>>> =
            (0..signals.len()).map(|_| Vec::new()).collect();
        let mut threads = Vec::new();
        let mut polled: Vec<Vec<(Box<dyn feed::Polled>, FeedCtx)>> = (0..config.workers).map(|_| Vec::new()).collect();
        let mut feed_threads = 0;
        for (i, (source, health)) in sources.into_iter().zip(feeds).enumerate() {
            let (fanout, consumers) = shared.hub.connect_feed(i, health.push.clone());
            for (w, c) in consumers.into_iter().enumerate() {
                rings[w].push(c);
            }
            let channels = source.publishes_channels().then(|| {
                let (fanout, consumers) = shared.hub.connect_channels(health.push.clone());
                for (w, c) in consumers.into_iter().enumerate() {
                    chan_rings[w].push(c);
                }
                fanout
            });
            let ctx = FeedCtx {
                fanout,
                health: health.clone(),
                shutdown: shutdown.clone(),
                registry: registry.clone(),
                market_open: shared.market_open.clone(),
                channels,
                channel_table: shared.channels.clone(),
                demand: shared.hub.demand.clone(),
            };
            let source = match config.feed_poll {
                FeedPoll::Worker => match source.polled() {
                    Ok(p) => {
                        health.read_by.store(i % config.workers, Ordering::Relaxed);
                        log::info!("feed {} is read by worker-{}", health.name, i % config.workers);
                        polled[i % config.workers].push((p, ctx));
                        continue;
                    }
                    Err(source) => {
                        log::debug!("feed {} cannot be polled by a worker; it runs on its own thread", health.name);
                        source
                    }
                },
                FeedPoll::Thread => source,
            };
            let cpus = config.cpus.clone();
            let cpu_index = feed_threads;
            feed_threads += 1;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("feed-{}", health.name))
                    .spawn(move || {
                        let _down = feed::DownOnExit(ctx.health.clone());
                        pin(&cpus, cpu_index, "feed");
                        source.run(ctx);
                    })
                    .context("spawning a feed thread")?,
            );
        }
        if let (Some(url), Some(poll), Some(health)) = (&config.publish, mirror_poll, shared.mirror.clone()) {
            let mirror = crate::mirror::Mirror {
                url: url.clone(),
                rings: rings.pop().expect("the mirror's rings are last"),
                chan_rings: chan_rings.pop().expect("the mirror's rings are last"),
                channels: shared.channels.clone(),
                health,
                packet_seq: vec![0; registry.len()],
            };
            let stop = shutdown.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("publish-redis".into())
                    .spawn(move || {
                        let _keep_waker_alive = poll;
                        mirror.run(stop);
                    })
                    .context("spawning the publish thread")?,
            );
        }
        // The control plane's HTTP thread: /status, /metrics and the rest,
        // rendered off the workers' loops.
        let (http_jobs, jobs) = crossbeam_channel::unbounded();
        let (reply_txs, mut reply_rxs): (Vec<_>, Vec<_>) =
            (0..config.workers).map(|_| crossbeam_channel::unbounded()).unzip();
        let answer_to = reply_txs.into_iter().zip(signals.iter().cloned()).collect();
        let http_shared = shared.clone();
        let cpus = config.cpus.clone();
        threads.push(
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || {
                    pin_off(&cpus, "the http thread");
                    crate::http::serve(http_shared, jobs, answer_to);
                })
                .context("spawning the http thread")?,
        );
        for (id, (((((poll, listener), rings), chan_rings), feeds), ports)) in
            polls.into_iter().zip(listeners).zip(rings).zip(chan_rings).zip(polled).zip(ports).enumerate()
        {
            let setup = WorkerSetup {
                id,
                poll,
                listener,
                ports,
                signal: signals[id].clone(),
                rings,
                chan_rings,
                feeds,
                http_jobs: http_jobs.clone(),
                http_replies: std::mem::replace(&mut reply_rxs[id], crossbeam_channel::never()),
            };
            let worker = Worker::new(setup, shared.clone()).context("starting a worker")?;
            let cpus = config.cpus.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{id}"))
                    .spawn(move || {
                        pin(&cpus, feed_threads + id, "worker");
                        worker.run();
                    })
                    .context("spawning a worker thread")?,
            );
        }
        drop(http_jobs); // the workers hold the only senders: the thread ends with them
        Ok(Server { shared, signals, threads, local_addr })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shared state (status, counters).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop every thread: clients get close 1001; returns when all exited.
    pub fn stop(self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for s in &self.signals {
            let _ = s.waker.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // Every writer has stopped: readers may now learn it is over.
        if let Some(region) = &self.shared.hub.shm {
            region.close();
        }
    }
}

/// Run until SIGTERM or SIGINT, then stop cleanly.
///
/// # Errors
/// Start-up failures (see [`Server::start`]).
pub fn run(config: Config) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone()).context("installing signal handlers")?;
    let clock = crate::market::Clock::from_env()?;
    let server = Server::start(config)?;
    let addr = server.local_addr();
    let s = server.shared();
    if let Some(path) = &s.config.state_file {
        // Before the banner: a client that reconnects once it can finds its session.
        match s.sessions.read_state(path, Instant::now()) {
            Ok(n) => log::info!("state file {}: restored {n} session(s)", path.display()),
            Err(e) => log::warn!(
                "state file {}: {e:#}; ignored, starting without saved sessions (it is replaced at the next stop)",
                path.display()
            ),
        }
    }
    // Before the banner, so the first welcome already has the clock's state.
    let mut market = crate::market::Watch::new(s.config.market_hours.clone(), clock);
    market.update(&s.market_open);
    let shm = s.hub.shm.as_ref().map_or(String::new(), |r| format!("; shm: {}", r.path().display()));
    let ws = |d: Option<Dialect>| if s.tls.acceptor(d).is_some() { "wss" } else { "ws" };
    let oa = s.openalgo_addr.map_or(String::new(), |a| format!("; OpenAlgo: {}://{a}", ws(Some(Dialect::OpenAlgo))));
    let kite = s.kite_addr.map_or(String::new(), |a| format!("; Kite: {}://{a}", ws(Some(Dialect::Kite))));
    let (main, http) = if s.tls.acceptor(None).is_some() { ("wss", "https") } else { ("ws", "http") };
    println!("{SERVER_NAME} listening on {main}://{addr}/stream (status: {http}://{addr}/status{shm}{oa}{kite})");
    for (what, a, d) in [
        ("main", Some(addr), None),
        ("OpenAlgo", s.openalgo_addr, Some(Dialect::OpenAlgo)),
        ("Kite", s.kite_addr, Some(Dialect::Kite)),
    ] {
        if let Some(a) = a.filter(|a| !a.ip().is_loopback() && s.tls.acceptor(d).is_none()) {
            log::warn!("the {what} listener on {a} is plain (no TLS): fine behind a TLS proxy, otherwise give --tls-cert and --tls-key");
        }
    }
    let feeds: Vec<String> = s.config.feeds.iter().map(|f| format!("{f:?}")).collect();
    log::info!("{} instruments, {} worker(s), feeds: {}", s.registry.len(), s.config.workers, feeds.join(", "));
    let mut last_sweep = Instant::now();
    let mut last_reap = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        market.update(&s.market_open);
        if let Some(region) = &s.hub.shm {
            region.heartbeat();
            if last_reap.elapsed() > Duration::from_secs(1) {
                let n = region.reap_parked();
                if n > 0 {
                    log::info!("shm: cleared {n} parked reader(s) that exited without unparking");
                }
                last_reap = Instant::now();
            }
        }
        if reload.swap(false, Ordering::Relaxed) {
            if s.tls.stats.certs.is_empty() {
                log::info!("SIGHUP: no TLS certificates to reload");
            }
            s.tls.stats.reload();
        }
        if last_sweep.elapsed() > Duration::from_secs(10) {
            server.shared().sessions.sweep(Instant::now());
            last_sweep = Instant::now();
        }
    }
    log::info!("shutting down");
    let shared = server.shared().clone();
    server.stop();
    // The workers have closed every client and saved the resumable ones.
    if let Some(path) = &shared.config.state_file {
        match shared.sessions.write_state(path, Instant::now()) {
            Ok(n) => log::info!("state file {}: wrote {n} session(s)", path.display()),
            Err(e) => log::error!("state file {}: {e:#}; sessions not kept", path.display()),
        }
    }
    Ok(())
}
