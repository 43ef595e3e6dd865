//! Builds the pingora server from a validated config: proxy, admin and upkeep services.
//! The one place where seatgate's config becomes pingora types.
//!
//! TLS listeners answer from the app's certificate slots (see `config::tls`) with ALPN h2 and
//! http/1.1; a reload refills the slots, so certificates change without a restart and without
//! touching open connections. A `redirect_https` listener is its own small service.

use crate::admin::reports::{Reports, Sampler};
use crate::admin::AdminService;
use crate::app::{pool_specs, App, Observers};
use crate::audit::Audit;
use crate::config::tls::CertSlot;
use crate::config::{Config, StoreBackend};
use crate::ledger::memory::MemoryLedger;
use crate::ledger::redis::RedisLedger;
use crate::ledger::{now_ms, LedgerObserver, SeatLedger, SharedLedger};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::apps::HttpServerApp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

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
        // Measured here: +20% rps on a bare proxy; requests never migrate between threads.
        work_stealing: false,
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

/// Adds the gateway's services to `server`; `extra` lets `demo` add its sample app.
pub fn build_server(app: Arc<App>, opts: &RunOptions) -> Result<Server, String> {
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

    let mut proxy =
        pingora_proxy::http_proxy_service(&server.configuration, Gateway::new(app.clone()));
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
    server.add_service(proxy);
    if let Some(r) = redirect {
        server.add_service(r);
    }
    server.add_service(admin);
    server.add_service(sampler);
    server.add_service(upkeep);
    Ok(server)
}

/// A TLS endpoint answering from `slot`, HTTP/2 preferred over HTTP/1.1 by ALPN.
fn add_tls<A: HttpServerApp + Send + Sync + 'static>(
    svc: &mut Service<A>,
    addr: &str,
    slot: &Arc<CertSlot>,
) -> Result<(), String> {
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
    use super::RedirectHttps;

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
