//! edgemon: a small daemon that streams a Linux host's vital signs to browsers on the LAN.
//!
//! One frame's way through the daemon, module by module (read them in this order):
//!
//! - `collect`: one file per data source (CPU, memory, temperatures, Pi health,
//!   network, disks, processes, log tails, the daemon itself); plain structs out, no I/O kept.
//! - `sampler`: one `std::thread` measures the host every second and caches the sample (and a RAM
//!   ring of history); nothing on the request path ever measures.
//! - [`topics`]: the catalog of topics and their producers, started per hub; `logs` follows log
//!   files, journals and containers' logs for the `logs/NAME` topics; `services` asks systemd,
//!   `containers` the container engine (through `engine`, an HTTP/1.1 client on its socket).
//! - `hub`: one hub per topic with an explicit subscriber list of bounded channels; created with
//!   its first subscriber, removed (producer stopped) after its last one leaves.
//! - `connection`: one smol task per WebSocket; forwards frames, answers commands, pings, and
//!   always closes explicitly. Its `limits::ConnSlot` gives its place back on every exit path.
//! - [`protocol`]: the wire format in both directions, every frame the connection sends.
//!
//! Around that path:
//!
//! - [`app`]: the shared state every task reads, and its JSON views.
//! - [`http`], `routes`, `metrics` and [`auth`]: a GET-only HTTP/1.1 layer on httparse, the routes,
//!   the Prometheus exposition, the optional token.
//! - `upgrade`: the WebSocket handshake, origin check and admission (`limits`); `rate`: the
//!   token buckets that keep one client's input from starving the rest.
//! - `http_task` (one plain-HTTP connection), `host` (the DNS-rebinding guard) and
//!   `http_slots` (caps on plain-HTTP connections).
//! - [`server`]: the accept loop, request heads, shutdown; [`ServerHandle`] for tests.
//! - [`config`] (flags, validated), [`notify`] (systemd), [`logging`] (a log that cannot take
//!   the daemon down), `trim` (heap back to the OS after churn), `lock` (the one poison-tolerant
//!   mutex lock).
// Three commented `unsafe` places exist: `malloc_trim` in `trim`, the Pi firmware mailbox
// `ioctl` in `collect::pi` (behind the `Mailbox` trait), and `getifaddrs` in
// `mdns::interfaces`; everything else is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod app;
pub mod auth;
pub(crate) mod child;
pub(crate) mod codec;
pub(crate) mod collect;
pub mod config;
pub(crate) mod connection;
pub(crate) mod containers;
pub mod deliver;
pub(crate) mod duration;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod fleet;
pub(crate) mod history;
pub(crate) mod host;
pub mod http;
pub(crate) mod http_slots;
pub(crate) mod http_task;
pub(crate) mod hub;
pub(crate) mod limits;
pub(crate) mod lock;
pub mod logging;
pub(crate) mod logs;
pub(crate) mod mdns;
pub(crate) mod metrics;
pub mod notify;
pub(crate) mod outlet;
pub mod protocol;
pub(crate) mod rate;
pub(crate) mod routes;
pub(crate) mod sampler;
pub mod server;
pub(crate) mod services;
pub(crate) mod snapshot;
pub(crate) mod spread;
pub mod topics;
pub(crate) mod trim;
pub(crate) mod upgrade;

pub use config::{Config, Flags};
pub use containers::LogAccess;
pub use server::{Server, ServerHandle};
/// A log `pos` as a client sends it back (`after`), parsed and encoded again; `None` if it is
/// refused. For the fuzzer: what parses must encode to a `pos` that parses to the same.
pub fn reencode_log_pos(s: &str) -> Option<String> {
    logs::Pos::parse(s).ok().map(|p| p.encode())
}

pub use history::budget_host_series;
pub use snapshot::{check_snapshot, runtime_dir, seal_snapshot, synthetic_demo, synthetic_week};
