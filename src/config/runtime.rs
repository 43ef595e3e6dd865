//! The validated runtime configuration: typed values only, no serde.
//!
//! Built once from a `FileConfig` by `Config::from_file` (in `validate`, one validator per
//! section); nothing here checks anything, so a value of these types is always valid.

use super::kinds::{Expired, IdleBy, Mode, Permission, Role, StoreErrorPolicy};
use super::on_full::OnFull;
use super::tls::TlsCert;
use crate::domain::{GroupLimit, PoolKey, PoolSpec, QueueSpec, SeatsPer};
use http::{HeaderName, Method};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    /// The gateway's listeners in config order (at least one).
    pub listen: Vec<Listener>,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub products: Vec<Arc<Product>>,
    pub audit: Option<AuditConfig>,
    pub threads: usize,
    pub work_stealing: bool,
    pub access_log: Option<AccessLogTarget>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub timeouts: Timeouts,
}

/// Downstream timeouts (slowloris): the request head, each read of the body, and the wait for
/// the next request on a kept-alive connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    /// nginx's `client_header_timeout` / `client_body_timeout` are 60 s and its keep-alive
    /// 75 s; a gateway in front of people, not batch uploads, can be tighter.
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(30),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: String,
    /// TLS with HTTP/2 (ALPN h2, http/1.1); the certificate is re-read on reload.
    pub tls: Option<TlsCert>,
    /// Answers every request with a redirect to the first TLS listener.
    pub redirect_https: bool,
}

impl Listener {
    /// What a running gateway cannot change without a restart: the socket and whether it
    /// speaks TLS or redirects (certificates can change on reload).
    pub fn shape(&self) -> (&str, bool, bool) {
        (&self.address, self.tls.is_some(), self.redirect_https)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    File(PathBuf),
    Stdout,
}

#[derive(Debug)]
pub struct AdminConfig {
    pub listen: String,
    pub tls: Option<TlsCert>,
    pub users: Vec<AdminUser>,
    pub session_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminUser {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub products: Vec<String>,
    pub permission: Permission,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub flush_interval: Duration,
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    Embedded { path: PathBuf },
    Redis(RedisConfig),
}

pub use crate::domain::{RedisConfig, RedisTarget};

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub hash_users: bool,
}

#[derive(Debug)]
pub struct Product {
    pub name: String,
    /// The app's `host:port`.
    pub upstream: String,
    /// TLS to the app: `None` is plain HTTP.
    pub upstream_tls: Option<UpstreamTls>,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub session: SessionPolicy,
    pub login: LoginRule,
    pub logout: Option<LogoutRule>,
    pub seats_per: SeatsPer,
    pub pools: Vec<Pool>,
    /// `pools[i]`'s ledger key, built once so a check allocates nothing.
    pub pool_keys: Vec<PoolKey>,
    pub exempt_users: HashSet<String>,
    pub named_users: HashSet<String>,
    pub max_sessions: Option<u32>,
    pub groups: Vec<Group>,
    pub clients: Vec<Client>,
    pub on_store_error: StoreErrorPolicy,
    pub max_login_body: usize,
    /// The built-in denial used when a request of this product has no client kind of its own.
    pub default_denial: OnFull,
    pub self_service: SelfServicePolicy,
}

impl Product {
    /// Every seat any grant gives, in force now or not: the number the built-in denial page
    /// names.
    pub fn granted_seats(&self) -> u32 {
        self.pools
            .iter()
            .map(|p| p.grants.iter().map(|g| g.seats).sum::<u32>())
            .sum()
    }
}

/// `upstream: { tls: true, sni, ca }`: the name the app's certificate is verified against
/// (always one: pingora skips verification without SNI) and the CAs trusted for it (`None`:
/// the system roots).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub sni: String,
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// Identifies `ca` in pingora's connection pool key, which leaves the CA out: without it
    /// a product trusting another CA could reuse a connection verified for this one.
    pub ca_group: u64,
}

/// `self_service`: on by default; the offer only ever reaches clients whose `on_full` is the
/// built-in page, after the app accepted the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfServicePolicy {
    pub enabled: bool,
    pub token_ttl: Duration,
    /// The seat freed by self-service is reserved for the same user this long (their next login
    /// on this gateway takes it); unused, it is released by the store when the time is up.
    pub hold: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub cookie: String,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub presence_timeout: Option<Duration>,
    pub expired: Expired,
    pub device_cookie: String,
    pub standby_timeout: Duration,
    pub cookie_path: String,
    /// `session.activity.ignore`: requests served as usual that do not reset the idle timer.
    pub ignore: Vec<IgnoreRule>,
    pub idle_by: IdleBy,
    /// `session.idle_warning`: shown this long before an idle end (needs presence).
    pub idle_warning: Option<Duration>,
}

/// One `session.activity.ignore` entry: a client matcher, plus the response's media type
/// (lower-case prefixes; any of them) when `content_type` is given.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRule {
    pub matcher: Matcher,
    pub content_type: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LoginRule {
    pub path: String,
    pub method: Method,
    pub user: UserSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSource {
    None,
    Form(String),
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct LogoutRule {
    pub path: String,
    pub method: Option<Method>,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub grants: Vec<Grant>,
    pub users: HashSet<String>,
    pub header: Option<HeaderMatch>,
    pub overflow_ms: Option<u64>,
    pub default: bool,
    /// The waiting line (`queue.enabled`, the pool's keys over the product's); `None`: off.
    pub queue: Option<QueueSpec>,
}

impl Pool {
    /// Seats granted at `now_ms` (unix millis): the sum of the grants in force.
    pub fn capacity(&self, now_ms: u64) -> u32 {
        self.grants
            .iter()
            .filter(|g| {
                g.not_before.is_none_or(|t| now_ms >= t) && g.expires.is_none_or(|t| now_ms < t)
            })
            .map(|g| g.seats)
            .sum()
    }
}

pub use crate::domain::Grant;

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub users: HashSet<String>,
    pub reserve: u32,
    pub max: Option<u32>,
    pub pool: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub test: TextTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextTest {
    Present,
    Equals(String),
    Contains(String),
}

impl TextTest {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            TextTest::Present => true,
            TextTest::Equals(x) => v == x,
            TextTest::Contains(x) => v.contains(x.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub kind: String,
    pub matcher: Matcher,
    pub mode: Mode,
    pub on_full: OnFull,
    /// `on_full` is the built-in HTML page (a browser): the page is rendered per denial with the
    /// seat counts, and may carry the self-service offer.
    pub builtin_page: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub path_prefix: Option<String>,
    pub header: Option<HeaderMatch>,
    pub user_agent: Option<String>,
    pub method: Option<Method>,
}

impl Matcher {
    pub fn is_default(&self) -> bool {
        self.path_prefix.is_none()
            && self.header.is_none()
            && self.user_agent.is_none()
            && self.method.is_none()
    }
}

impl Config {
    /// The listeners that speak TLS, with their certificates, in config order.
    pub fn tls_listeners(&self) -> impl Iterator<Item = &TlsCert> {
        self.listen.iter().filter_map(|l| l.tls.as_ref())
    }

    pub fn product(&self, name: &str) -> Option<&Arc<Product>> {
        self.products.iter().find(|p| p.name == name)
    }
}

/// The ledger's view of a product's pools (start and reload).
pub fn pool_specs(p: &Product) -> Vec<PoolSpec> {
    p.pools
        .iter()
        .enumerate()
        .map(|(i, pool)| PoolSpec {
            key: PoolKey::new(&p.name, &pool.name),
            grants: pool.grants.clone(),
            idle_timeout: p.session.idle_timeout.as_millis() as u64,
            max_lifetime: p.session.max_lifetime.as_millis() as u64,
            presence_timeout: p.session.presence_timeout.map(|d| d.as_millis() as u64),
            standby_timeout: p.session.standby_timeout.as_millis() as u64,
            seats_per: p.seats_per,
            max_sessions: p.max_sessions,
            groups: p
                .groups
                .iter()
                .filter(|g| g.pool == i)
                .map(|g| GroupLimit {
                    name: g.name.clone(),
                    users: g.users.clone(),
                    reserve: g.reserve,
                    max: g.max,
                })
                .collect(),
            overflow_ms: pool.overflow_ms,
            queue: pool.queue,
        })
        .collect()
}
