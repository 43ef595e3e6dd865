//! The ledger on every store: one contract suite and one model-based test, each run against
//! the memory store, the memory store with its journal closed and reopened between steps, and
//! Redis (127.0.0.1:6379, or `SEATGATE_TEST_REDIS`; each test uses its own key prefix and
//! deletes its keys).

mod common;
mod contract;
mod model;
mod queue;
mod queue_redis;
