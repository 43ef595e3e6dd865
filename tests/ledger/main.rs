//! The ledger on every store: one contract suite and one model-based test, each run against
//! the memory store, the memory store with its journal closed and reopened between steps, and
//! Redis (127.0.0.1:6379, or `SEATGATE_TEST_REDIS`; each test uses its own key prefix and
//! deletes its keys).

/// Runs each named scenario `fn name(kind: Kind)` on every store: volatile, journal, Redis.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod volatile {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Kind::Volatile).await } )*
        }
        mod journal {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Kind::Journal).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::common::Kind::Redis).await } )*
        }
    };
}

mod common;
mod contract;
mod model;
mod queue;
mod queue_redis;
