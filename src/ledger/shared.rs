//! The store's shared values: a few named strings every gateway on one store agrees on (the
//! self-service token key, spent offers, holds). Kept apart from `SeatLedger` because they are
//! no seat: the self-service service asks this trait and nothing else of the ledger.

use super::LedgerError;
use crate::domain::Millis;
use async_trait::async_trait;

/// A shared value as the store answers it. `Local`: this store belongs to one process and
/// shares nothing, so the caller keeps such values in memory itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Shared<T> {
    Local,
    Value(T),
}

#[async_trait]
pub trait SharedState: Send + Sync {
    /// Sets the shared value `name` to `value` unless it is set (expiring after `ttl_ms` when
    /// given) and answers the value it now holds, the same for every gateway on this store: a
    /// secret all replicas agree on, or a mark that only the first of them gets.
    async fn shared_once(
        &self,
        name: &str,
        value: &str,
        ttl_ms: Option<Millis>,
    ) -> Result<Shared<String>, LedgerError>;

    /// Replaces the shared value `name` by `value` (expiring after `ttl_ms`), or removes it
    /// when `value` is `None`, and answers what it held before.
    async fn shared_swap(
        &self,
        name: &str,
        value: Option<&str>,
        ttl_ms: Millis,
    ) -> Result<Shared<Option<String>>, LedgerError>;
}
