//! Pure decisions: no I/O, no `Session`, time as an input. Unit-tested with tables.
//!
//! * `classify`: product, client kind and action of a request; user name of a login.
//! * `cookies`: session/device cookie extraction, login success detection.
//! * `forwarded`: the X-Forwarded-* headers the app gets (`trusted_proxies`).
//! * `hostile`: request heads refused before anything else (smuggling, size bounds).
//! * `admission`: may a login take a seat (pools, groups' reserve/max, per-user max).
//! * `seat`: when a held seat ends (idle, lifetime, presence, standby, admin end).
//! * `activity`: whether a seat holder's request resets its idle timer (`session.activity`,
//!   `idle_by`), and when the idle warning is due.
//! * `selfserve`: offering a denied user to end one of their own sessions; signed tokens.

pub mod activity;
pub mod admission;
pub mod classify;
pub mod cookies;
pub mod forwarded;
pub mod hostile;
pub mod queue;
pub mod seat;
pub mod selfserve;
