//! The daemon's shared state: one `App` per daemon, below the server and above everything it
//! wires together (sampler, topics, hubs, admission). Its JSON views (`/api/websocket/stats`, the
//! `server` topic) live here too, beside the figures they read.

use std::future::Future;
use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_channel::Receiver;
use event_listener::Event as Changed;
use smol::Executor;

use crate::config::Config;
use crate::host::AllowedHosts;
use crate::http_slots::HttpSlots;
use crate::hub::Registry;
use crate::limits::Limits;
use crate::logs::{FileSource, Source};
use crate::sampler::Sampler;
use crate::topics::{DaemonView, Topics};

/// State shared by every task of one daemon.
pub struct App {
    /// The validated configuration: every limit and timeout a task applies comes from here.
    pub config: Config,
    /// Admission counters (global, per IP, per /64): the upgrade takes a slot, the connection's
    /// `Drop` gives it back, so the counts are right whichever way a connection ends.
    pub limits: Arc<Limits>,
    /// Plain-HTTP connection caps: without them idle keep-alive connections take every descriptor.
    pub http_slots: Arc<HttpSlots>,
    /// The names this daemon answers to (the DNS-rebinding guard), fixed at start.
    pub hosts: AllowedHosts,
    /// Live hubs by topic: connections subscribe here; a hub and its producer exist only while
    /// someone listens (plus the linger).
    pub registry: Arc<Registry>,
    /// Which topics exist and what feeds them; the registry asks it for producers.
    pub topics: Arc<Topics>,
    /// The measuring thread's cache: the request path reads it and never measures itself.
    pub sampler: Arc<Sampler>,
    /// Closed at shutdown; every task races its waits against it, so none outlives the drain.
    pub shutdown: Receiver<()>,
    /// Notified when connections, hubs or producers change: stats watchers and tests wait on it
    /// instead of sleeping.
    pub changed: Arc<Changed>,
    /// When the daemon started, for uptime figures.
    pub started: Instant,
    /// What became of alert notifications (sent, retried, failed, suppressed, dropped).
    pub notify_counters: Arc<crate::deliver::Counters>,
    /// The mDNS responder, when this board announces itself.
    pub mdns: Option<Arc<crate::mdns::Mdns>>,
    /// Where tasks are spawned; weak so no task keeps the executor (and so itself) alive. Reached
    /// only through [`App::spawn`].
    ex: Weak<Executor<'static>>,
}

impl App {
    /// Starts the sampler thread and wires the topics, hubs and admission counters of one daemon
    /// whose tasks run on `ex` and wind down when `shutdown` closes.
    pub fn new(
        config: Config,
        ex: &Arc<Executor<'static>>,
        shutdown: Receiver<()>,
    ) -> io::Result<Arc<App>> {
        let changed = Arc::new(Changed::new());
        let notify_counters = Arc::new(crate::deliver::Counters::default());
        let outbox = start_delivery(&config, ex, &notify_counters);
        let sampler = Arc::new(Sampler::start(
            config.history,
            config.history_days,
            config.sys_root.clone(),
            crate::sampler::Keep {
                runtime: config.runtime_dir.clone(),
                state: config.state_dir.clone().map(|d| (d, config.state_interval)),
            },
            crate::collect::net::Filter::new(
                config.net_include.clone(),
                config.net_exclude.clone(),
            ),
            crate::sampler::AlertSetup {
                rules: config.alerts.clone(),
                min_resolve: config.alert_min_resolve,
                outbox: outbox.clone(),
            },
        )?);
        ex.spawn(count_failed_units(Arc::downgrade(&sampler)))
            .detach();
        let limits = Arc::new(Limits::new(
            config.max_connections,
            config.max_per_ip,
            notifier(&changed),
        ));
        let logs = log_sources(&config);
        let mdns = start_mdns(&config, ex, &shutdown);
        let http_slots = Arc::new(HttpSlots::new(
            config.max_per_ip,
            config.max_connections,
            notifier(&changed),
        ));
        let hosts = AllowedHosts::new(
            AllowedHosts::system_hostname().as_deref(),
            &config.allow_hosts,
        );
        // The `server` topic reads this very state: the catalog gets a weak handle to it.
        Ok(Arc::new_cyclic(|me: &Weak<App>| {
            let me: Weak<dyn DaemonView> = me.clone();
            let topics = Arc::new(Topics::new(
                sampler.clone(),
                config.flood,
                logs,
                changed.clone(),
                me,
                config.units.clone(),
                crate::topics::Remote {
                    engine: config
                        .docker_socket
                        .clone()
                        .map(|p| Arc::new(crate::engine::Engine::new(p))),
                    logs: config.container_logs.clone(),
                    me: config.listen.to_string(),
                    peers: config.peers.clone(),
                    peer_settings: Arc::new(crate::fleet::Settings {
                        token: config.token.clone(),
                        ping: config.ping_interval,
                        pong: config.pong_timeout,
                    }),
                    mdns: mdns.clone(),
                },
            ));
            let registry = Registry::new(
                topics.clone(),
                Arc::downgrade(ex),
                config.hub_linger,
                notifier(&changed),
            );
            App {
                config,
                limits,
                http_slots,
                hosts,
                registry,
                topics,
                sampler,
                shutdown,
                changed,
                started: Instant::now(),
                notify_counters,
                mdns,
                ex: Arc::downgrade(ex),
            }
        }))
    }

    /// Runs `task` on the daemon's executor, detached; false (and `task` dropped) once the
    /// executor is gone, i.e. during shutdown.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        match self.ex.upgrade() {
            Some(ex) => {
                ex.spawn(task).detach();
                true
            }
            None => false,
        }
    }

    /// `/api/websocket/stats`, live.
    pub fn stats(&self) -> serde_json::Value {
        let (per_ip, total) = self.limits.rejected();
        serde_json::json!({
            "status": "healthy",
            "active_connections": self.limits.active(),
            "max_connections": self.limits.max_total,
            "max_per_ip": self.limits.max_per_ip,
            "hubs": self.registry.stats(),
            "connections_total": self.limits.connections_total(),
            "http_connections": self.http_slots.open(),
            "rejected_total": per_ip + total,
            "rejected": { "per_ip": per_ip, "max_connections": total },
            "refused": self
                .limits
                .refused()
                .into_iter()
                .map(|(why, n)| (why.label().to_string(), n.into()))
                .collect::<serde_json::Map<_, _>>(),
            "producers": self.topics.running(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "mdns": self.mdns.as_ref().map(|m| {
                let c = &m.counters;
                let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                serde_json::json!({
                    "interfaces": m.interfaces().iter().map(|i| i.addr.to_string()).collect::<Vec<_>>(),
                    "sent": n(&c.sent),
                    "malformed": n(&c.malformed),
                    "ignored": n(&c.ignored),
                    "send_errors": n(&c.send_errors),
                })
            }),
        })
    }
}

impl DaemonView for App {
    fn daemon_view(&self) -> serde_json::Value {
        let own = self.sampler.own();
        let per_ip: Vec<_> = self
            .limits
            .per_ip()
            .into_iter()
            .map(|(ip, n)| serde_json::json!({ "ip": ip.to_string(), "connections": n }))
            .collect();
        let frames_sent: u64 = self.registry.topic_counters().iter().map(|c| c.1).sum();
        serde_json::json!({
            "active_connections": self.limits.active(),
            "connections_total": self.limits.connections_total(),
            "per_ip": per_ip,
            "hubs": self.registry.stats(),
            "rss": own.rss,
            "cpu": own.cpu,
            "written_bytes": own.written_bytes,
            "uptime": self.started.elapsed().as_secs(),
            "frames_sent": frames_sent,
        })
    }
}

/// How often failed systemd units are counted while the `services` topic is not watched (it
/// counts them itself every few seconds while it is).
pub const UNITS_COUNT_EVERY: Duration = Duration::from_secs(30);

/// Counts failed units for the `units_failed` alert metric and `/metrics`: right after start,
/// then every `UNITS_COUNT_EVERY` unless the `services` topic counted more recently. Holds the
/// sampler weakly so that the daemon's stop is never held up by this task.
async fn count_failed_units(sampler: Weak<Sampler>) {
    let mut said = false;
    loop {
        let due = match sampler.upgrade() {
            None => return,
            Some(s) => s.units_failed_age().is_none_or(|a| a >= UNITS_COUNT_EVERY),
        };
        if due {
            let (count, why) = crate::services::failed_count().await;
            if let Some(why) = why.filter(|_| !said) {
                log::info!(
                    "services: systemd units cannot be read: {why}{}",
                    crate::services::hint(&why)
                );
                said = true;
            }
            match sampler.upgrade() {
                Some(s) => s.set_units_failed(count),
                None => return,
            }
        }
        smol::Timer::after(UNITS_COUNT_EVERY).await;
    }
}

/// A callback that wakes every waiter on `changed`.
fn notifier(changed: &Arc<Changed>) -> Box<dyn Fn() + Send + Sync> {
    let changed = changed.clone();
    Box::new(move || {
        changed.notify(usize::MAX);
    })
}

/// One delivery task per `--notify` target on `ex`, each with its bounded queue; the outbox
/// the sampler thread posts alert changes to (`None` without targets).
fn start_delivery(
    config: &Config,
    ex: &Arc<Executor<'static>>,
    counters: &Arc<crate::deliver::Counters>,
) -> Option<crate::deliver::Outbox> {
    if config.notify.is_empty() {
        return None;
    }
    let host = AllowedHosts::system_hostname()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edgemon".into());
    // The page a notification links to: a name the Host check admits.
    let name = match config.allow_hosts.first() {
        Some(h) => h.clone(),
        None => format!("{host}.local"),
    };
    let board = crate::deliver::Board {
        url: format!("http://{name}:{}/", config.listen.port()),
        host,
    };
    // Built once, shared by every https target; without CA certificates each https notification
    // fails with the reason (the daemon still starts: plain http targets and all else work).
    let tls = config.notify.iter().any(|t| t.tls).then(|| {
        let tls = crate::deliver::tls_config();
        if let Err(why) = &tls {
            log::error!("notify: https targets cannot be reached: {why}");
        }
        tls
    });
    let mut queues = Vec::new();
    for t in &config.notify {
        let (tx, rx) = async_channel::bounded(crate::deliver::QUEUE);
        queues.push((t.to_string(), tx));
        ex.spawn(crate::deliver::run_target(
            t.clone(),
            tls.clone().filter(|_| t.tls),
            board.clone(),
            rx,
            counters.clone(),
        ))
        .detach();
        log::info!("alerts: notifying {t}");
    }
    Some(crate::deliver::Outbox::new(queues, counters.clone()))
}

/// The configured log topics (`--log` files, then `--journal` units) by name.
fn log_sources(config: &Config) -> Vec<(String, Source)> {
    let files = config.logs.iter().map(|(name, path)| {
        let file = FileSource::new(path);
        if file.path != *path {
            log::info!(
                "logs/{name}: following {} (the configured {} resolved once, at start)",
                file.path.display(),
                path.display()
            );
        }
        (name.clone(), Source::File(file))
    });
    let journals = config.journals.iter().map(|(name, unit)| {
        let source = Source::Journal {
            unit: unit.clone(),
            dir: config.journal_dir.clone(),
        };
        (name.clone(), source)
    });
    files.chain(journals).collect()
}

/// The mDNS responder, running on `ex` until `shutdown`, when `--no-mdns` is not given and the
/// daemon listens on a LAN address; a port 5353 that cannot be had is logged and discovery is
/// off, the daemon serves on.
fn start_mdns(
    config: &Config,
    ex: &Arc<Executor<'static>>,
    shutdown: &Receiver<()>,
) -> Option<Arc<crate::mdns::Mdns>> {
    if !config.mdns {
        return None;
    }
    let listen = crate::mdns::announces_on(config.listen)?;
    let hostname = AllowedHosts::system_hostname().unwrap_or_default();
    match crate::mdns::Mdns::new(listen, &hostname, config.token.is_some()) {
        Ok(m) => {
            let m = Arc::new(m);
            ex.spawn(m.clone().run(shutdown.clone())).detach();
            Some(m)
        }
        Err(e) => {
            log::warn!("mdns: off, cannot use UDP port {}: {e}", crate::mdns::PORT);
            None
        }
    }
}
