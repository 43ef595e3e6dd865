//! A fast shutdown (SIGINT, Ctrl-C) that closes the listeners before the runtimes go.
//!
//! Pingora's accept loop retries a failed `accept` at once, without yielding, and a fast
//! shutdown drops the service runtimes thread by thread without telling the listeners. With
//! `work_stealing: false` a listener is registered on the thread that started its service and
//! accepts on another: once the first thread's runtime is gone every accept on the second fails
//! at once ("a Tokio 1.x context was found, but it is being shutdown"), that thread spins at
//! 100% CPU and the process never exits. A graceful shutdown does not, because pingora first
//! tells the listeners to stop; so on a fast one the listeners are told the same, and given a
//! moment to close, before pingora drops the runtimes.

use async_trait::async_trait;
use pingora_core::server::{
    ListenFds, RuntimeOpts, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a fast shutdown waits for the listeners to close; they take milliseconds.
const LISTENERS_CLOSE: Duration = Duration::from_secs(2);

/// A shutdown signal as `run` takes it: awaited from the server's own runtime.
pub type Signal = Box<dyn ShutdownSignalWatch + Send + Sync>;

/// The stop flag the wrapped services watch besides pingora's own, and how many still run.
#[derive(Clone)]
pub struct StopListeners {
    stop: Arc<watch::Sender<bool>>,
    running: Arc<watch::Sender<usize>>,
}

impl Default for StopListeners {
    fn default() -> Self {
        StopListeners {
            stop: Arc::new(watch::channel(false).0),
            running: Arc::new(watch::channel(0).0),
        }
    }
}

impl StopListeners {
    /// `signal`, which on a fast shutdown first stops every listener wrapped by [`Stoppable`].
    pub fn watching(&self, signal: Signal) -> Box<dyn ShutdownSignalWatch> {
        Box::new(StopFirst {
            inner: signal,
            listeners: self.clone(),
        })
    }

    /// `svc`, stopped by a fast shutdown too; `fds` are inherited sockets it serves, put in
    /// pingora's fd table under their configured address before it starts.
    pub fn wrap<S>(&self, svc: S, fds: Vec<(String, OwnedFd)>) -> Stoppable<S> {
        Stoppable {
            inner: svc,
            fds,
            listeners: self.clone(),
        }
    }
}

struct StopFirst {
    inner: Signal,
    listeners: StopListeners,
}

#[async_trait]
impl ShutdownSignalWatch for StopFirst {
    async fn recv(&self) -> ShutdownSignal {
        let signal = self.inner.recv().await;
        if matches!(signal, ShutdownSignal::FastShutdown) {
            self.listeners.stop.send_replace(true);
            let mut running = self.listeners.running.subscribe();
            if tokio::time::timeout(LISTENERS_CLOSE, running.wait_for(|n| *n == 0))
                .await
                .is_err()
            {
                log::warn!("fast shutdown: listeners still open after {LISTENERS_CLOSE:?}");
            }
        }
        signal
    }
}

/// A listening service that stops on pingora's shutdown watch or on a fast shutdown, and
/// first hands its inherited sockets to pingora (the listener then takes them instead of
/// binding, as on a graceful upgrade, and a later upgrade passes them on).
pub struct Stoppable<S> {
    inner: S,
    fds: Vec<(String, OwnedFd)>,
    listeners: StopListeners,
}

#[async_trait]
impl<S: pingora_core::services::Service> pingora_core::services::Service for Stoppable<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let Some(table) = &fds {
            let mut t = table.lock();
            for (addr, fd) in self.fds.drain(..) {
                // The listener owns it from here (pingora's `from_raw_fd`).
                t.add(addr, fd.into_raw_fd());
            }
        }
        let (tell, told) = watch::channel(false);
        let mut fast = self.listeners.stop.subscribe();
        tokio::spawn(async move {
            // Either watch's sender gone also ends the service: it is the server ending.
            while !*shutdown.borrow_and_update() && !*fast.borrow_and_update() {
                tokio::select! {
                    r = shutdown.changed() => if r.is_err() { break },
                    r = fast.changed() => if r.is_err() { break },
                }
            }
            tell.send_replace(true);
        });
        self.listeners.running.send_modify(|n| *n += 1);
        self.inner.start_service(fds, told, listeners_per_fd).await;
        self.listeners.running.send_modify(|n| *n -= 1);
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
