//! The shared state every service holds: the current config (swapped whole on reload), the
//! ledger, metrics and audit. Owned by `Arc` handles, never by statics.

use crate::access_log::AccessLog;
use crate::audit::Audit;
use crate::config::tls::CertSlot;
use crate::config::{self, Config, ConfigError, Product};
use crate::domain::{now_ms, SessionKey};
use crate::domain::{Millis, PoolSpec, QueueEvent, ReleaseReason, SeatRecord, Ticket};
use crate::gate::{self, DenyReason, Gate, Outcome, Record};
use crate::ledger::{LedgerObserver, SharedLedger};
use crate::metrics::{Metrics, ProductSeries};
use crate::policy::classify::{self, Action};
use crate::policy::cookies::CookieWord;
use crate::presence::{script, Script};
use arc_swap::ArcSwap;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::Session;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// One consistent snapshot: a request uses the same snapshot from start to end.
pub struct Runtime {
    pub config: Arc<Config>,
    /// `products[i].upstream`, resolved once per load so no request does DNS.
    pub upstreams: Vec<SocketAddr>,
    /// `products[i]`'s heartbeat script, rendered once per load; `None` without presence.
    pub scripts: Vec<Option<Script>>,
    /// `products[i]`'s per-request metric series, resolved once per load.
    pub series: Vec<ProductSeries>,
    /// `products[i]`'s pool-full answers, rendered and prebuilt once per load.
    pub denials: Vec<crate::responses::Denials>,
}

impl Runtime {
    pub fn new(config: Arc<Config>, upstreams: Vec<SocketAddr>, metrics: &Metrics) -> Self {
        let scripts = config
            .products
            .iter()
            .map(|p| {
                let extras = script::Extras {
                    input: p.session.idle_by == config::IdleBy::Input,
                    warn: p.session.idle_warning.is_some(),
                };
                p.session
                    .presence_timeout
                    .map(|pt| Script::with(&script::heartbeat_url(&p.path_prefix), pt, extras))
            })
            .collect();
        // Every label combination of a product is made visible at 0 here too, so dashboards
        // and `rate()` work from the first scrape.
        let series = config
            .products
            .iter()
            .map(|p| {
                let kinds = client_kinds(p);
                metrics.prime(&p.name, &kinds);
                prime_ops(metrics, p);
                metrics.series(&p.name, &kinds)
            })
            .collect();
        let denials = config
            .products
            .iter()
            .map(|p| crate::responses::Denials::new(p))
            .collect();
        Runtime {
            config,
            upstreams,
            scripts,
            series,
            denials,
        }
    }

    /// The peer for `products[i]`'s app: plain, or TLS verified against its `sni` with its own
    /// CA bundle or the system roots.
    pub fn peer(&self, i: usize) -> Option<HttpPeer> {
        let addr = *self.upstreams.get(i)?;
        let p = self.config.products.get(i)?;
        Some(match &p.upstream_tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(t) => {
                let mut peer = HttpPeer::new(addr, true, t.sni.clone());
                peer.options.ca = t.ca.clone();
                peer.group_key = t.ca_group;
                peer
            }
        })
    }
}

/// The certificates the TLS listeners present, refilled by every reload.
pub struct Certs {
    /// One per TLS listener of `listen`, in config order.
    pub listeners: Vec<Arc<CertSlot>>,
    pub admin: Option<Arc<CertSlot>>,
}

impl Certs {
    fn new(cfg: &Config) -> Self {
        Certs {
            listeners: cfg.tls_listeners().map(CertSlot::new).collect(),
            admin: cfg.admin.tls.as_ref().map(CertSlot::new),
        }
    }

    /// Puts `cfg`'s certificates in the slots (same listeners: checked by the caller).
    fn refill(&self, cfg: &Config) {
        for (slot, c) in self.listeners.iter().zip(cfg.tls_listeners()) {
            slot.replace(c);
        }
        if let (Some(slot), Some(c)) = (&self.admin, &cfg.admin.tls) {
            slot.replace(c);
        }
    }
}

pub struct App {
    runtime: ArcSwap<Runtime>,
    pub ledger: SharedLedger,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<Audit>,
    pub config_path: Option<PathBuf>,
    /// The admission service (its heartbeat limits, idle warnings and self-service state
    /// outlive reloads like the seats they concern).
    pub gate: Gate,
    pub access_log: AccessLog,
    pub certs: Certs,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Refused(String),
}

pub fn resolve(cfg: &Config) -> Result<Vec<SocketAddr>, ReloadError> {
    cfg.products
        .iter()
        .map(|p| {
            p.upstream
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    ReloadError::Refused(format!(
                        "product `{}`: cannot resolve upstream `{}`",
                        p.name, p.upstream
                    ))
                })
        })
        .collect()
}

pub fn pool_specs(cfg: &Config) -> Vec<PoolSpec> {
    cfg.products
        .iter()
        .flat_map(|p| crate::config::pool_specs(p))
        .collect()
}

/// The series the Grafana dashboard and the alert rules watch that `Metrics::prime` leaves
/// out: visible at 0 from the first scrape, so panels and `rate()` have a line before the
/// first heartbeat, self-service offer or store error.
fn prime_ops(m: &Metrics, p: &Product) {
    let name = p.name.as_str();
    for r in ["ok", "gone", "limited", "hide", "error"] {
        m.heartbeats.with_label_values(&[name, r]);
    }
    for r in [
        "offered",
        "ended",
        "already_gone",
        "malformed",
        "forged",
        "expired",
        "spent",
        "wrong_product",
    ] {
        m.self_service.with_label_values(&[name, r]);
    }
    let policy = crate::gate::store_error_label(p.on_store_error);
    m.store_errors.with_label_values(&[name, policy]);
}

/// A product's client kinds in config order, then the fallback `default`.
fn client_kinds(p: &Product) -> Vec<String> {
    p.clients
        .iter()
        .map(|c| c.kind.clone())
        .chain(["default".to_string()])
        .collect()
}

impl App {
    pub fn new(
        cfg: Config,
        ledger: SharedLedger,
        metrics: Arc<Metrics>,
        audit: Arc<Audit>,
        path: Option<PathBuf>,
    ) -> Result<Self, ReloadError> {
        let upstreams = resolve(&cfg)?;
        let access_log = AccessLog::open(cfg.access_log.as_ref()).map_err(ReloadError::Refused)?;
        let certs = Certs::new(&cfg);
        ledger.configure(&pool_specs(&cfg));
        Ok(App {
            runtime: ArcSwap::from_pointee(Runtime::new(Arc::new(cfg), upstreams, &metrics)),
            gate: Gate::new(ledger.clone()),
            ledger,
            metrics,
            audit,
            config_path: path,
            access_log,
            certs,
        })
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    pub fn config(&self) -> Arc<Config> {
        self.runtime.load().config.clone()
    }

    /// Re-reads the config file. A bad config is refused and the running one kept; listeners
    /// and the store cannot change without a restart, so such a change is refused too.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let path = self.config_path.as_ref().ok_or_else(|| {
            ReloadError::Refused("this gateway was started without a config file".into())
        })?;
        let new = config::load(path)?;
        let old = self.config();
        fn shape(c: &Config) -> (Vec<(&str, bool, bool)>, &str, bool) {
            let l = c.listen.iter().map(|l| l.shape()).collect();
            (l, &c.admin.listen, c.admin.tls.is_some())
        }
        if shape(&new) != shape(&old) {
            return Err(ReloadError::Refused(
                "`listen` and `admin.listen` (addresses, TLS on or off, redirect_https) need a \
                 restart (or `run -u` upgrade); certificates alone reload"
                    .into(),
            ));
        }
        if new.store.backend != old.store.backend {
            return Err(ReloadError::Refused("`store` needs a restart".into()));
        }
        let upstreams = resolve(&new)?;
        self.access_log
            .set_target(new.access_log.as_ref())
            .map_err(ReloadError::Refused)?;
        self.certs.refill(&new);
        self.ledger.configure(&pool_specs(&new));
        self.runtime.store(Arc::new(Runtime::new(
            Arc::new(new),
            upstreams,
            &self.metrics,
        )));
        self.audit.record(
            "config_reload",
            serde_json::json!({ "path": path.display().to_string() }),
        );
        log::info!("configuration reloaded from {}", path.display());
        Ok(())
    }
}

pub use crate::gate::{pool_for, pool_key};

/// Fans ledger releases and line events out to metrics and audit.
pub struct Observers(pub Vec<Arc<dyn LedgerObserver>>);

impl LedgerObserver for Observers {
    fn released(&self, seat: &SeatRecord, reason: ReleaseReason) {
        for o in &self.0 {
            o.released(seat, reason);
        }
    }

    fn resumed(&self, seat: &SeatRecord) {
        for o in &self.0 {
            o.resumed(seat);
        }
    }

    fn queue_event(&self, ticket: &Ticket, ev: QueueEvent, at: Millis) {
        for o in &self.0 {
            o.queue_event(ticket, ev, at);
        }
    }
}

/// A finished request as the proxy's context knows it: what `App::record` and
/// `App::log_access` write.
pub struct Finished<'a> {
    pub rt: Option<&'a Runtime>,
    pub product: Option<usize>,
    pub client: Option<usize>,
    pub action: Action,
    pub started: Instant,
    pub rec: &'a Record,
    /// The request's session cookie, hashed (the access log's seat).
    pub request_key: Option<SessionKey>,
}

impl Finished<'_> {
    fn product(&self) -> Option<&Arc<Product>> {
        self.rt?.config.products.get(self.product?)
    }
}

impl App {
    /// A finished request's metrics and audit line, from its record: once per request.
    pub fn record(&self, f: &Finished<'_>) {
        let (m, rec) = (&self.metrics, f.rec);
        if let Some(b) = rec.bad_request {
            m.bad_requests.with_label_values(&[b.as_str()]).inc();
        }
        let Some(rt) = f.rt else { return };
        let secs = f.started.elapsed().as_secs_f64();
        let series = f.product.and_then(|i| rt.series.get(i));
        let (Some(p), Some(series)) = (f.product(), series) else {
            // No product matched: only the denial and its time are known.
            if let Some(reason) = rec.denied() {
                m.denials
                    .with_label_values(&["none", "default", reason])
                    .inc();
            }
            m.request_duration
                .with_label_values(&["none", f.action.label()])
                .observe(secs);
            return;
        };
        let name = p.name.as_str();
        let client = gate::client_label(p, f.client);
        if rec.store_error {
            let policy = gate::store_error_label(p.on_store_error);
            m.store_errors.with_label_values(&[name, policy]).inc();
        }
        if rec.ignored {
            m.requests_ignored.with_label_values(&[name]).inc();
        }
        if rec.idle_warning {
            m.idle_warnings.with_label_values(&[name]).inc();
        }
        if let Some(b) = rec.heartbeat {
            m.heartbeats.with_label_values(&[name, b.as_str()]).inc();
        }
        if let Some(r) = rec.self_service {
            m.self_service.with_label_values(&[name, r.as_str()]).inc();
        }
        if let Some(pass) = rec.check {
            series.check(f.client, pass);
        }
        if let Some(r) = rec.login {
            m.logins
                .with_label_values(&[name, client, r.as_str()])
                .inc();
        }
        match rec.outcome {
            Outcome::Denied(DenyReason::CheckFull) => series.check_denied(f.client),
            Outcome::Denied(reason) => m
                .denials
                .with_label_values(&[name, client, reason.as_str()])
                .inc(),
            _ => {}
        }
        if let Some(e) = &rec.audit {
            let (event, fields) = e.to_line(name, |u| self.audit.user(u));
            self.audit.record(event, fields);
        }
        series.duration(f.action, secs);
    }

    /// The access log line (`access_log`): plain facts only, never a cookie value.
    pub fn log_access(&self, s: &Session, f: &Finished<'_>) {
        if !self.access_log.enabled() {
            return;
        }
        let p = f.product();
        let (req, resp) = (s.req_header(), s.response_written());
        // The session: the request's cookie, or the one a login's answer just set.
        let seat = p.and_then(|p| {
            let key = f.request_key.or_else(|| {
                match gate::app_word(&resp?.headers, &p.session.cookie, now_ms())? {
                    CookieWord::Set(v) => Some(SessionKey::of_cookie(&p.name, &v)),
                    CookieWord::Deleted => None,
                }
            })?;
            Some(key.hex()[..12].to_string())
        });
        let user = match (p, f.action) {
            (Some(p), Action::Login) => {
                let body = s.get_retry_buffer().unwrap_or_default();
                classify::login_user(&p.login.user, &req.headers, &body)
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        // As the audit log writes it: a keyed hash with `audit.hash_users`.
        let user = user.and_then(|u| self.audit.user(Some(&u)).as_str().map(str::to_owned));
        let peer = s.client_addr().map(|a| a.to_string());
        self.access_log.write(&crate::access_log::Request {
            product: p.map(|p| p.name.as_str()),
            client: p.map_or("default", |p| gate::client_label(p, f.client)),
            action: f.action.label(),
            method: req.method.as_str(),
            path: crate::access_log::log_path(req.uri.path()),
            status: resp.map_or(0, |r| r.status.as_u16()),
            duration: f.started.elapsed(),
            bytes: s.body_bytes_sent() as u64,
            seat: seat.as_deref(),
            user: user.as_deref(),
            denied: f.rec.denied(),
            peer: peer.as_deref(),
            http: if s.is_http2() { "2" } else { "1.1" },
            tls: s.digest().is_some_and(|d| d.ssl_digest.is_some()),
        });
    }
}
