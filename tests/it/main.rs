//! Integration tests: one binary, so the gateway is built once and shared.

mod core;
mod harness;
mod browser;
mod redis;
mod reload;
