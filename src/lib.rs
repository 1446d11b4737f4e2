//! edgemon: a small daemon that streams a Linux host's vital signs to browsers on the LAN.
//!
//! Data flows through these modules, in order:
//!
//! - [`collect`]: one file per data source (CPU, memory, temperatures, Pi health, network,
//!   disks, the daemon itself); plain structs out.
//! - [`sampler`]: one `std::thread` measures the host every second and caches the sample (and a
//!   RAM ring of history); nothing on the request path ever measures.
//! - [`topics`]: the catalogue of topics and their producers, started per hub; [`logs`] follows
//!   log files and journals for the `logs/NAME` topics.
//! - [`hub`]: one hub per topic with an explicit subscriber list of bounded channels; created with
//!   its first subscriber, removed (producer stopped) after its last one leaves.
//! - [`connection`]: one smol task per WebSocket; forwards frames, answers commands, pings, and
//!   always closes explicitly. Its [`limits::ConnSlot`] gives its place back on every exit path.
//! - [`http`] and [`routes`]: a GET-only HTTP/1.1 layer on httparse, and the routes.
//! - [`server`]: the accept loop, the upgrade, admission and shutdown.
//! - [`metrics`]: Prometheus exposition of host gauges and the daemon's counters.
//! - [`config`]: flags, validated.
//! - [`trim`]: hands freed heap back to the OS after connection churn.
// One commented `unsafe` call exists: `malloc_trim` in `trim`; everything else is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod collect;
pub mod config;
pub mod connection;
pub mod http;
pub mod hub;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod routes;
pub mod sampler;
pub mod server;
pub mod topics;
pub mod trim;

pub use config::{Config, Flags};
pub use server::{Server, ServerHandle};
