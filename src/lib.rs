//! seatgate: a concurrent-license gateway on pingora.
//!
//! # Layout
//! Arrows point inward, to `policy` and `ledger`:
//!
//! * [`config`]: YAML file format → validated runtime config (errors name key and line).
//! * [`policy`]: pure decisions (classify a request, admit a login, when a seat ends, what
//!   counts as activity).
//! * [`ledger`]: the `SeatLedger` trait and its stores (memory + redb journal).
//! * [`proxy`]: the pingora `ProxyHttp` impl; wires request → policy → ledger → response.
//! * [`presence`]: the heartbeat script and its injection into HTML pages (pure parts).
//! * [`responses`]: every canned answer (denials per client kind, expired redirect …).
//! * [`admin`]: admin listener: JSON API, usage page, `/metrics`, `/healthz`.
//! * [`crypto`]: HMAC-SHA256 and constant-time comparison (RustCrypto), for every secret.
//! * [`metrics`], [`audit`]: Prometheus registry; append-only JSON-lines audit log.
//! * [`access_log`]: one JSON line per request (off by default).
//! * [`app`]: the shared state (config snapshot, ledger, metrics, audit) and reload.
//! * [`server`]: turns a config into a pingora server with its services.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod appclient;
pub mod audit;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod gate;
pub mod ledger;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod proxy;
pub mod responses;
pub mod server;

#[cfg(test)]
mod layering;
