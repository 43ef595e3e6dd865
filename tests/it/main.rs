//! Integration tests: one binary, so the gateway is built once and shared.

mod browser;
mod core;
mod harness;
mod redis;
mod reload;
