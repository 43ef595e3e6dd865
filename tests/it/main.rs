//! Integration tests: one binary, so the gateway is built once and shared.

mod accounted;
mod admin;
mod browser;
mod cli;
mod core;
mod fuzz;
mod harness;
mod health;
mod hostile;
mod idle;
mod ops;
mod presence;
mod products;
mod queue;
mod queue_admin;
mod redis;
mod reload;
mod selfserve;
mod tls;
