//! seatgate: a concurrent-license gateway on pingora.
//!
//! # Layout
//! From the inside out; a module imports only those above it in this list (the `layering`
//! test checks it on the source: no inner module imports an outer one, no cycles). The
//! request's path through them is in `docs/architecture.md`.
//!
//! * [`domain`]: the seat's vocabulary — session keys, seat ids, pool keys and specs, grants,
//!   states, release reasons, the ledger's questions and answers, time. Imports nothing.
//! * [`crypto`]: HMAC-SHA256 and constant-time comparison (RustCrypto), for every secret.
//! * [`config`]: YAML file format → validated runtime config, one validator per section
//!   (errors name key and line); owns its runtime enums and the typed `on_full` answers.
//! * [`presence`]: the heartbeat script, its injection into HTML pages, heartbeat limits.
//! * [`policy`]: pure decisions — classify a request, cookies and the app's word, hostile
//!   heads, forwarding headers, activity, admission counts, seat deadlines, self-service tokens.
//! * [`ledger`]: the `SeatLedger` and `SharedState` traits and their stores: `memory` (+ redb
//!   `journal`) and `redis` (one Lua script, shared by replicas).
//! * [`metrics`], [`audit`], [`access_log`]: Prometheus registry; JSON-lines audit log; one
//!   JSON line per request (off by default).
//! * [`gate`]: the admission service — `SeatRequest` → `Decision` (forward, deny with a
//!   `Denial`, answer, verify at the app), the app's answer → `Commit`; exempt and named users,
//!   devices, re-logins, adoption, self-service holds, `on_store_error`. Table-tested with a
//!   memory ledger and a fixed clock.
//! * [`responses`]: every answer the gateway writes itself; `render(&Denial)` is the one match
//!   from a denial to a response; canned answers prebuilt once per config snapshot.
//! * [`appclient`]: the gateway's own calls to the app (self-service login check, background
//!   logout) on a bounded, supervised worker.
//! * [`app`]: the shared state (config snapshot, ledger, gate, metrics, audit), reload, and
//!   recording a request's metrics and audit lines once.
//! * [`proxy`]: the pingora `ProxyHttp` impl; it only translates (request → `SeatRequest`,
//!   `Decision` → forward or answer, app answer → `AppAnswer`).
//! * [`admin`]: admin listener — router, RBAC, views, handlers; JSON API, License Usage page,
//!   `/metrics`, `/healthz`, reports.
//! * [`server`]: turns a config (and sockets handed over, if any) into a pingora server with its
//!   services; `run(…, shutdown)` serves until the signal.
//! * [`demo`]: the demo app behind `seatgate demo`.

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
