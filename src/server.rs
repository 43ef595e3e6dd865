//! Builds the pingora server from a validated config: proxy, admin and upkeep services.
//! The one place where seatgate's config becomes pingora types.
//!
//! TLS listeners answer from the app's certificate slots (see `config::tls`) with ALPN h2 and
//! http/1.1; a reload refills the slots, so certificates change without a restart and without
//! touching open connections. A `redirect_https` listener is its own small service.
//!
//! Listeners may come already bound ([`Inherited`]: systemd socket activation, `--listen-fd`,
//! or a test that bound port 0 itself); each is matched to the configured listener with the
//! same address and handed to pingora through the table its graceful upgrade uses, so a later
//! `run -u` passes them on like any other listener.

use crate::admin::reports::{Reports, Sampler};
use crate::admin::AdminService;
use crate::app::{pool_specs, App, Observers};
use crate::audit::Audit;
use crate::config::tls::CertSlot;
use crate::config::{Config, StoreBackend};
use crate::domain::now_ms;
use crate::ledger::memory::MemoryLedger;
use crate::ledger::redis::RedisLedger;
use crate::ledger::{LedgerObserver, SeatLedger, SharedLedger};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

mod head_deadline;
mod stop_first;
pub use head_deadline::{HeadDeadline, HeadTimed};
pub use stop_first::Signal;
use stop_first::StopListeners;

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub upgrade: bool,
    pub daemon: bool,
    pub config_path: Option<PathBuf>,
}

pub fn server_conf(cfg: &Config, opts: &RunOptions) -> ServerConf {
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let tag = cfg.admin.listen.replace([':', '.', '[', ']'], "_");
    ServerConf {
        threads,
        // Off unless asked: measured in docs/benchmarks.md (threads × work stealing).
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: format!("/tmp/seatgate_upgrade_{tag}.sock"),
        pid_file: format!("/tmp/seatgate_{tag}.pid"),
        daemon: opts.daemon,
        ..ServerConf::default()
    }
}

/// Opens the configured store; the embedded store restores surviving seats here.
pub async fn open_ledger(
    cfg: &Config,
    observer: Arc<dyn LedgerObserver>,
) -> Result<SharedLedger, String> {
    match &cfg.store.backend {
        StoreBackend::Embedded { path } => {
            let l = MemoryLedger::open(path, &pool_specs(cfg), observer, now_ms())
                .await
                .map_err(|e| format!("store: {e}"))?;
            Ok(Arc::new(l))
        }
        // Builds the client only: it connects on first use, inside pingora's runtimes.
        StoreBackend::Redis(r) => {
            let l = RedisLedger::new(r, observer).map_err(|e| format!("store: {e}"))?;
            l.configure(&pool_specs(cfg));
            Ok(Arc::new(l))
        }
    }
}

pub fn build_app(cfg: Config, opts: &RunOptions) -> Result<Arc<App>, String> {
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(match &cfg.audit {
        Some(a) => Audit::open(&a.path, a.hash_users).map_err(|e| format!("audit: {e}"))?,
        None => Audit::disabled(),
    });
    let observer: Arc<dyn LedgerObserver> =
        Arc::new(Observers(vec![metrics.clone(), audit.clone()]));
    // The ledger is opened on a short-lived runtime: pingora builds its own runtimes later.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ledger = rt.block_on(open_ledger(&cfg, observer))?;
    let app = App::new(cfg, ledger, metrics, audit, opts.config_path.clone())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(app))
}

/// Sweeps expired seats, flushes activity, reloads the config on SIGHUP and reopens the access
/// log on SIGUSR1.
pub struct Upkeep {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let store = self.app.config().store.clone();
        let mut sweep = tokio::time::interval(store.sweep_interval);
        let mut flush = tokio::time::interval(store.flush_interval);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot listen for SIGHUP, reload only via the admin API: {e}");
                None
            }
        };
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!("cannot listen for SIGUSR1, the access log is never reopened: {e}");
                    None
                }
            };
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = self.app.ledger.flush().await;
                    self.app.access_log.flush();
                    return;
                }
                Some(()) = async { match usr1.as_mut() { Some(u) => u.recv().await, None => std::future::pending().await } } => {
                    self.app.access_log.reopen();
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.app.ledger.sweep(now_ms()).await {
                        log::warn!("sweep failed: {e}");
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.app.ledger.flush().await {
                        log::warn!("activity flush failed: {e}");
                    }
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    if let Err(e) = self.app.reload() {
                        log::error!("reload refused, old config kept: {e}");
                        self.app.audit.record("config_reload_refused", serde_json::json!({"error": e.to_string()}));
                    }
                }
            }
        }
    }
}

/// `seatgate_bad_requests_total{reason="malformed"}` of the app being served: heads pingora
/// refuses with its own 400 before any hook of ours runs (obs-fold, conflicting or listed
/// Content-Length, a Transfer-Encoding list, TE on HTTP/1.0, a head it cannot parse), counted
/// by the connection wrapper (`head_deadline`), which sees pingora's 400 to a head the proxy
/// never saw.
static MALFORMED: std::sync::OnceLock<prometheus::IntCounter> = std::sync::OnceLock::new();

/// The `reason` of the requests pingora refuses itself.
pub const MALFORMED_REASON: &str = "malformed";

/// Counts one head pingora refused (see [`head_deadline`]).
pub fn count_refused_head() {
    if let Some(c) = MALFORMED.get() {
        c.inc();
    }
}

/// Listening sockets the gateway was given already bound, each with the address it is bound to.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(SocketAddr, OwnedFd)>,
}

/// The first fd of systemd's socket-activation protocol (`sd_listen_fds(3)`).
const SD_LISTEN_FDS_START: RawFd = 3;

impl Inherited {
    /// Takes ownership of `fds`, which must be bound TCP sockets (listening or not: pingora
    /// calls `listen` again, as it does on an upgrade).
    pub fn from_fds(fds: &[RawFd]) -> Result<Self, String> {
        let mut sockets = Vec::new();
        for &fd in fds {
            if fd < SD_LISTEN_FDS_START {
                return Err(format!("listen fd {fd}: not a socket fd (0-2 are stdio)"));
            }
            // SAFETY: the caller gave us these fds to own (a listener fd is used by no one else
            // in this process); a duplicate in `fds` is refused below before a second owner.
            if sockets
                .iter()
                .any(|(_, o): &(SocketAddr, OwnedFd)| std::os::fd::AsRawFd::as_raw_fd(o) == fd)
            {
                return Err(format!("listen fd {fd} given twice"));
            }
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            let addr = l
                .local_addr()
                .map_err(|e| format!("listen fd {fd}: not a bound TCP socket: {e}"))?;
            // tokio requires it; the inheriting parent shares the flag and never accepts.
            l.set_nonblocking(true)
                .map_err(|e| format!("listen fd {fd}: {e}"))?;
            sockets.push((addr, OwnedFd::from(l)));
        }
        Ok(Inherited { sockets })
    }

    /// systemd socket activation: `LISTEN_PID` is this process and `LISTEN_FDS=n` names fds
    /// 3..3+n. Nothing when they are unset or meant for another process (a child of ours).
    pub fn from_env() -> Result<Self, String> {
        let Some(n) = listen_fds_for(
            std::env::var("LISTEN_PID").ok().as_deref(),
            std::env::var("LISTEN_FDS").ok().as_deref(),
            std::process::id(),
        )?
        else {
            return Ok(Inherited::default());
        };
        // Not passed on to anything we start.
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        let fds: Vec<RawFd> = (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n).collect();
        Self::from_fds(&fds)
    }

    pub fn merge(mut self, other: Inherited) -> Self {
        self.sockets.extend(other.sockets);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The socket for the listener configured as `address`, if one was given.
    fn take(&mut self, address: &str) -> Option<OwnedFd> {
        let wanted: Vec<SocketAddr> = address.to_socket_addrs().ok()?.collect();
        let i = self
            .sockets
            .iter()
            .position(|(bound, _)| serves(&wanted, *bound))?;
        Some(self.sockets.remove(i).1)
    }
}

/// `LISTEN_FDS`' count when `LISTEN_PID` names `pid`; an error for values that are not numbers.
pub fn listen_fds_for(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<Option<RawFd>, String> {
    let (Some(p), Some(n)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let p: u32 = p
        .parse()
        .map_err(|_| format!("LISTEN_PID={p}: not a process id"))?;
    let n: RawFd = n
        .parse()
        .ok()
        .filter(|n| (0..=1024).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={n}: not a descriptor count"))?;
    Ok((p == pid && n > 0).then_some(n))
}

/// Whether a socket bound to `bound` is the listener configured with an address resolving to
/// `wanted`; pingora binds the first resolution, so that is the one that counts.
pub fn serves(wanted: &[SocketAddr], bound: SocketAddr) -> bool {
    wanted.first() == Some(&bound)
}

/// Adds `svc` to `server` with the inherited sockets of `addresses`.
fn add_listening<S: pingora_core::services::Service + 'static>(
    server: &mut GatewayServer,
    svc: S,
    addresses: &[&str],
    inherited: &mut Inherited,
) {
    let fds = addresses
        .iter()
        .filter_map(|a| Some((a.to_string(), inherited.take(a)?)))
        .collect();
    server.add_with(svc, fds);
}

/// The gateway's pingora server, whose listeners also close first on a fast shutdown
/// ([`stop_first`]).
pub struct GatewayServer {
    server: Server,
    listeners: StopListeners,
}

impl GatewayServer {
    /// Another listening service (the demo's sample app), stopped with the gateway's.
    pub fn add_service<S: pingora_core::services::Service + 'static>(&mut self, svc: S) {
        self.add_with(svc, Vec::new());
    }

    /// `svc`, serving `fds` (inherited sockets by configured address) where it has them.
    fn add_with<S: pingora_core::services::Service + 'static>(
        &mut self,
        svc: S,
        fds: Vec<(String, OwnedFd)>,
    ) {
        let svc = self.listeners.wrap(svc, fds);
        self.server.add_service(svc);
    }

    /// Serves until `shutdown` says so and every service has finished.
    pub fn run(self, shutdown: Signal) {
        self.server.run(RunArgs {
            shutdown_signal: self.listeners.watching(shutdown),
        });
    }
}

/// Runs the gateway on `inherited` sockets (binding the configured addresses that have none)
/// until `shutdown` says so and every service has finished. The library's entry: `seatgate
/// run` calls it with pingora's Unix signals (QUIT upgrade, TERM graceful, INT fast).
pub fn run(
    app: Arc<App>,
    opts: &RunOptions,
    inherited: Inherited,
    shutdown: Signal,
) -> Result<(), String> {
    build_server_on(app, opts, inherited)?.run(shutdown);
    Ok(())
}

/// The gateway's services on freshly bound listeners; `demo` adds its sample app to it.
pub fn build_server(app: Arc<App>, opts: &RunOptions) -> Result<GatewayServer, String> {
    build_server_on(app, opts, Inherited::default())
}

/// The gateway's services, each listener on its inherited socket when there is one. A socket
/// that matches no configured listener is refused: it would be held open and never served.
pub fn build_server_on(
    app: Arc<App>,
    opts: &RunOptions,
    mut inherited: Inherited,
) -> Result<GatewayServer, String> {
    // Primed at 0 with the app's other reasons; the first app served in a process keeps it.
    let _ = MALFORMED.set(
        app.metrics
            .bad_requests
            .with_label_values(&[MALFORMED_REASON]),
    );
    if opts.upgrade && !inherited.is_empty() {
        return Err(
            "--upgrade takes the running gateway's listeners; it cannot also be given sockets"
                .into(),
        );
    }
    let cfg = app.config();
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&cfg, opts));
    server.bootstrap();
    let mut server = GatewayServer {
        server,
        listeners: StopListeners::default(),
    };

    // `timeouts.header`, which pingora has no setting for: read per connection, so a reload
    // applies it to the connections that come after.
    let timed = {
        let app = app.clone();
        HeadDeadline::new(
            pingora_proxy::http_proxy(&server.server.configuration, Gateway::new(app.clone())),
            move || {
                let t = app.runtime().config.timeouts;
                (t.header, t.idle)
            },
            count_refused_head,
        )
    };
    let mut proxy = Service::new("Pingora HTTP Proxy Service".to_string(), timed);
    let mut slots = app.certs.listeners.iter();
    let https_port = cfg
        .listen
        .iter()
        .find(|l| l.tls.is_some())
        .and_then(|l| l.address.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let mut redirect = None;
    for l in &cfg.listen {
        if l.tls.is_some() {
            let slot = slots
                .next()
                .ok_or("internal: a TLS listener without a certificate slot")?;
            add_tls(&mut proxy, &l.address, slot)?;
        } else if l.redirect_https {
            let port = https_port.ok_or("redirect_https without a TLS listener")?;
            redirect
                .get_or_insert_with(|| {
                    Service::new(
                        "seatgate https redirect".to_string(),
                        RedirectHttps { port },
                    )
                })
                .add_tcp(&l.address);
        } else {
            proxy.add_tcp(&l.address);
        }
    }
    let reports = Arc::new(Reports::default());
    let mut admin = Service::new(
        "seatgate admin".to_string(),
        AdminService::new(app.clone(), reports.clone()),
    );
    match &app.certs.admin {
        Some(slot) => add_tls(&mut admin, &cfg.admin.listen, slot)?,
        None => admin.add_tcp(&cfg.admin.listen),
    }
    let sampler = background_service(
        "seatgate reports",
        Sampler {
            app: app.clone(),
            reports,
        },
    );
    let upkeep = background_service("seatgate upkeep", Upkeep { app });
    let proxied: Vec<&str> = cfg
        .listen
        .iter()
        .filter(|l| l.tls.is_some() || !l.redirect_https)
        .map(|l| l.address.as_str())
        .collect();
    let redirecting: Vec<&str> = cfg
        .listen
        .iter()
        .filter(|l| l.tls.is_none() && l.redirect_https)
        .map(|l| l.address.as_str())
        .collect();
    add_listening(&mut server, proxy, &proxied, &mut inherited);
    if let Some(r) = redirect {
        add_listening(&mut server, r, &redirecting, &mut inherited);
    }
    add_listening(&mut server, admin, &[&cfg.admin.listen], &mut inherited);
    if let Some((addr, _)) = inherited.sockets.first() {
        return Err(format!(
            "an inherited socket bound to {addr} matches no `listen` or `admin.listen` address"
        ));
    }
    server.server.add_service(sampler);
    server.server.add_service(upkeep);
    Ok(server)
}

/// A TLS endpoint answering from `slot`, HTTP/2 preferred over HTTP/1.1 by ALPN.
fn add_tls<A>(svc: &mut Service<A>, addr: &str, slot: &Arc<CertSlot>) -> Result<(), String> {
    let _ = crate::config::tls::provider();
    // No files: the certificate comes from the slot, which reloads refill.
    let mut tls = TlsSettings::intermediate("", "").map_err(|e| format!("{addr}: TLS: {e}"))?;
    tls.set_cert_resolver(slot.clone());
    tls.enable_h2();
    svc.add_tls_with_settings(addr, None, tls);
    Ok(())
}

/// `redirect_https: true`: every request gets a 308 to the same host and path on the TLS
/// listener's port (308 keeps the method, so a form POST is not turned into a GET).
pub struct RedirectHttps {
    pub port: u16,
}

impl RedirectHttps {
    /// The redirect target, or `None` for a Host that is not a plain host name or address.
    pub fn location(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        let host = host?;
        // Strip a port; keep an IPv6 literal's brackets.
        let name = match host.rsplit_once(':') {
            Some((h, p))
                if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') =>
            {
                h
            }
            _ => host,
        };
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
        if !ok {
            return None;
        }
        let port = match self.port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        Some(format!("https://{name}{port}{path}"))
    }
}

#[async_trait]
impl ServeHttp for RedirectHttps {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let req = s.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let answer = match self.location(host, pq) {
            Some(loc) => Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(http::header::LOCATION, loc),
            None => Response::builder().status(StatusCode::BAD_REQUEST),
        };
        if !s.is_body_done() {
            s.set_keepalive(None);
        }
        answer
            .header(http::header::CONTENT_LENGTH, 0)
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(Vec::new())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{build_app, listen_fds_for, serves, Inherited, RedirectHttps, RunOptions};
    use std::net::SocketAddr;
    use std::time::Duration;

    /// A shutdown signal the test fires.
    struct Fire(std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

    #[async_trait::async_trait]
    impl pingora_core::server::ShutdownSignalWatch for Fire {
        async fn recv(&self) -> pingora_core::server::ShutdownSignal {
            let rx = self.0.lock().unwrap().take();
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            pingora_core::server::ShutdownSignal::FastShutdown
        }
    }

    /// One GET on a fresh connection: the status line, or why there is none. (Read up to the
    /// line only: pingora may keep even an HTTP/1.0 connection open.)
    fn get(addr: SocketAddr, path: &str) -> Result<String, std::io::Error> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(c, "GET {path} HTTP/1.0\r\nHost: t\r\n\r\n")?;
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while !out.windows(2).any(|w| w == b"\r\n") {
            match c.read(&mut buf)? {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&out);
        Ok(text.lines().next().unwrap_or_default().to_string())
    }

    /// The library's entry, in process: `run` serves the sockets it is given (it binds
    /// nothing: the config's addresses are those sockets') until the shutdown signal, then
    /// returns and the sockets are closed.
    #[test]
    fn run_serves_the_given_sockets_until_the_shutdown_signal() {
        use std::os::fd::IntoRawFd;
        let (proxy, admin) = (
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        );
        let (p, a) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "listen: \"{p}\"\nadmin:\n  listen: \"{a}\"\nstore:\n  kind: embedded\n  path: \
                 \"{}/s.redb\"\nproducts:\n  - name: crm\n    upstream: 127.0.0.1:9\n    \
                 session: {{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h }}\n    \
                 login: {{ path: /login }}\n    seats: 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let cfg = crate::config::load(&path).unwrap();
        let opts = RunOptions::default();
        let app = build_app(cfg, &opts).unwrap();
        let inherited = Inherited::from_fds(&[proxy.into_raw_fd(), admin.into_raw_fd()]).unwrap();
        let (fire, fired) = tokio::sync::oneshot::channel();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let signal = Box::new(Fire(std::sync::Mutex::new(Some(fired))));
            let _ = done.send(super::run(app, &opts, inherited, signal));
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Connections made before the services start wait in the sockets' backlog.
            match finished.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                r => panic!("run ended before the signal: {r:?}"),
            }
            let health = get(a, "/healthz");
            if health.as_ref().is_ok_and(|s| s.contains(" 200 ")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "admin never answered: {health:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let answer = get(p, "/").unwrap();
        assert!(answer.starts_with("HTTP/1."), "the proxy answers: {answer}");
        fire.send(()).unwrap();
        // Generous: on a loaded machine the services' runtimes take their time to wind down.
        let ran = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("run returned after the signal");
        assert_eq!(ran, Ok(()));
        assert!(get(a, "/healthz").is_err(), "the admin socket is closed");
    }

    #[test]
    fn systemd_fds_are_ours_only_when_listen_pid_is_this_process() {
        assert_eq!(listen_fds_for(Some("42"), Some("2"), 42), Ok(Some(2)));
        assert_eq!(listen_fds_for(Some("41"), Some("2"), 42), Ok(None));
        assert_eq!(listen_fds_for(None, Some("2"), 42), Ok(None));
        assert_eq!(listen_fds_for(Some("42"), None, 42), Ok(None));
        assert_eq!(listen_fds_for(Some("42"), Some("0"), 42), Ok(None));
        assert!(listen_fds_for(Some("42"), Some("two"), 42).is_err());
        assert!(listen_fds_for(Some("me"), Some("2"), 42).is_err());
    }

    #[test]
    fn a_socket_serves_the_listener_whose_first_address_it_is_bound_to() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(serves(&[a, b], a));
        assert!(!serves(&[a, b], b), "pingora binds the first");
        assert!(!serves(&[], a));
    }

    #[test]
    fn inherited_sockets_are_matched_by_address_and_stdio_is_refused() {
        use std::os::fd::IntoRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut inh = Inherited::from_fds(&[l.into_raw_fd()]).unwrap();
        assert!(inh.take("127.0.0.1:1").is_none());
        assert!(inh.take(&addr.to_string()).is_some());
        assert!(inh.is_empty());
        assert!(Inherited::from_fds(&[1]).is_err());
    }

    #[test]
    fn redirects_keep_host_and_path_and_refuse_odd_hosts() {
        let r = RedirectHttps { port: 8443 };
        assert_eq!(
            r.location(Some("crm.example.com:8080"), "/a?b=1")
                .as_deref(),
            Some("https://crm.example.com:8443/a?b=1")
        );
        assert_eq!(
            RedirectHttps { port: 443 }
                .location(Some("crm.example.com"), "/")
                .as_deref(),
            Some("https://crm.example.com/")
        );
        assert_eq!(
            r.location(Some("[::1]:80"), "/x").as_deref(),
            Some("https://[::1]:8443/x")
        );
        assert_eq!(r.location(Some("evil.com/@x"), "/"), None);
        assert_eq!(r.location(None, "/"), None);
    }
}
