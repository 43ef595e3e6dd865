//! Which request heads reached the proxy, per connection: a task-local of the connection's
//! task, set by `request_filter` for each head and read back (and cleared) by the connection
//! wrapper (`server::head_deadline`) when the head's final answer goes out. A 400 to a head the
//! proxy never saw is pingora's refusal, which pingora reports otherwise only in a debug line.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static SEEN: Cell<bool>;
}

/// The head being answered reached the proxy. Does nothing outside [`scope`].
pub fn mark() {
    let _ = SEEN.try_with(|s| s.set(true));
}

/// Whether the head being answered reached the proxy, cleared for the next one; `None`
/// outside [`scope`].
pub fn take() -> Option<bool> {
    SEEN.try_with(|s| s.replace(false)).ok()
}

/// Runs a connection's future with its own mark.
pub async fn scope<F: Future>(f: F) -> F::Output {
    SEEN.scope(Cell::new(false), f).await
}
