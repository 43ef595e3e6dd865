//! The validated runtime configuration: typed values only, no serde.
//!
//! Built once from a [`FileConfig`] by [`Config::from_file`]; every cross-field rule (one default
//! client, known pool references, reserve within the pool …) is checked here and reported with
//! the dotted key and, where it can be found, the line in the source text.

use super::file::{self, FileConfig};
use super::kinds::{Expired, IdleBy, Mode, Permission, Role, StoreErrorPolicy, StoreKind};
use super::on_full::{self, OnFull};
use super::tls::{self, Part, TlsCert};
use super::ConfigError;
use crate::domain::SeatsPer;
use crate::domain::{GroupLimit, PoolKey, PoolSpec};
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

const DEFAULT_HOLD: Duration = Duration::from_secs(60);
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(120);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

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

const DEFAULT_MAX_LOGIN_BODY: usize = 16 * 1024;
/// pingora's retry buffer holds 64 KiB; a larger login body could not be replayed upstream.
const MAX_LOGIN_BODY_LIMIT: usize = 64 * 1024;

impl Config {
    /// Validates `f`; `src` is the file text, used only to point errors at a line.
    pub fn from_file(f: FileConfig, src: &str) -> Result<Config, ConfigError> {
        let loc = Locator { src };
        let listen = listeners(&f.listen, &loc)?;
        if listen.iter().any(|l| l.address == f.admin.listen.0) {
            return Err(loc.invalid("admin.listen", None, "must differ from `listen`"));
        }
        let admin_tls = f
            .admin
            .tls
            .as_ref()
            .map(|t| cert_pair(t, "admin.tls", None, &loc))
            .transpose()?;
        let access_log = match f.access_log {
            None => None,
            Some(a) => Some(match (a.path, a.stdout) {
                (Some(p), false) => AccessLogTarget::File(p),
                (None, true) => AccessLogTarget::Stdout,
                _ => {
                    return Err(loc.invalid(
                        "access_log",
                        None,
                        "give exactly one of `path` or `stdout: true`",
                    ))
                }
            }),
        };
        let mut users = Vec::new();
        let mut seen_users = HashSet::new();
        let inline = f.admin.users.len();
        let mut all = f.admin.users;
        let file_text = match &f.admin.users_file {
            Some(path) => {
                let (more, text) = users_file(path, &loc)?;
                all.extend(more);
                text
            }
            None => String::new(),
        };
        // Problems of a user from `users_file` point at that file's lines.
        let file_loc = Locator { src: &file_text };
        for (i, u) in all.into_iter().enumerate() {
            let (key, loc) = match i.checked_sub(inline) {
                None => (format!("admin.users[{i}]"), &loc),
                Some(j) => (format!("admin.users_file[{j}]"), &file_loc),
            };
            if !seen_users.insert(u.name.clone()) {
                return Err(loc.invalid(&key, Some(&u.name), "duplicate admin user name"));
            }
            if let Err(why) = crate::crypto::check_password_hash(&u.password_hash) {
                return Err(loc.invalid(&format!("{key}.password_hash"), Some(&u.name), &why));
            }
            users.push(AdminUser {
                name: u.name,
                password_hash: u.password_hash,
                role: u.role,
                products: u.products,
                permission: u.permission.unwrap_or(Permission::Control),
            });
        }

        // An admin API reachable from the network with nobody allowed in is a misconfiguration
        // waiting to be "fixed" by disabling auth: refuse it at load.
        let loopback = f
            .admin
            .listen
            .0
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
            || f.admin.listen.0.starts_with("localhost:");
        if users.is_empty() && !loopback {
            return Err(loc.invalid(
                "admin.users",
                None,
                "at least one admin user is required when admin.listen is not a loopback address",
            ));
        }
        let store = store_config(f.store, &loc)?;
        if f.products.is_empty() {
            return Err(loc.invalid("products", None, "at least one product is required"));
        }
        let mut products = Vec::new();
        let mut names = HashSet::new();
        for (i, p) in f.products.into_iter().enumerate() {
            if !names.insert(p.name.clone()) {
                return Err(loc.invalid(
                    &format!("products[{i}].name"),
                    Some(&p.name),
                    "duplicate product name",
                ));
            }
            products.push(Arc::new(product(i, p, &loc)?));
        }
        for u in &users {
            for p in &u.products {
                if !names.contains(p) {
                    return Err(loc.invalid(
                        &format!("admin.users({}).products", u.name),
                        Some(&u.name),
                        &format!("unknown product `{p}`"),
                    ));
                }
            }
        }
        let routes: Vec<(String, Vec<String>, String)> = products
            .iter()
            .map(|p| (p.name.clone(), p.hosts.clone(), p.path_prefix.clone()))
            .collect();
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[..i] {
                let hosts_overlap =
                    a.1.is_empty() || b.1.is_empty() || a.1.iter().any(|h| b.1.contains(h));
                if hosts_overlap && a.2 == b.2 && (a.1.is_empty() == b.1.is_empty()) {
                    return Err(loc.invalid(
                        &format!("products[{i}].path_prefix"),
                        Some(&a.0),
                        &format!(
                            "routes exactly like product `{}` (same hosts and path_prefix)",
                            b.0
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            listen,
            admin: AdminConfig {
                listen: f.admin.listen.0,
                tls: admin_tls,
                users,
                session_ttl: f
                    .admin
                    .session_ttl
                    .map_or(Duration::from_secs(8 * 3600), |d| d.0),
            },
            store,
            products,
            audit: f.audit.map(|a| AuditConfig {
                path: a.path,
                hash_users: a.hash_users,
            }),
            threads: f.threads.unwrap_or(0),
            access_log,
            trusted_proxies: f.trusted_proxies.iter().map(|c| c.0).collect(),
            timeouts: {
                let d = Timeouts::default();
                let t = f.timeouts.as_ref();
                let pick = |v: Option<Duration>, def: Duration| v.unwrap_or(def);
                let t = Timeouts {
                    header: pick(t.and_then(|t| t.header.as_ref()).map(|x| x.0), d.header),
                    body: pick(t.and_then(|t| t.body.as_ref()).map(|x| x.0), d.body),
                    idle: pick(t.and_then(|t| t.idle.as_ref()).map(|x| x.0), d.idle),
                };
                for (k, v) in [("header", t.header), ("body", t.body), ("idle", t.idle)] {
                    if v < Duration::from_millis(100) || v > Duration::from_secs(3600) {
                        return Err(loc.invalid(
                            &format!("timeouts.{k}"),
                            None,
                            "must be between 100ms and 1h",
                        ));
                    }
                }
                t
            },
        })
    }

    /// The listeners that speak TLS, with their certificates, in config order.
    pub fn tls_listeners(&self) -> impl Iterator<Item = &TlsCert> {
        self.listen.iter().filter_map(|l| l.tls.as_ref())
    }

    pub fn product(&self, name: &str) -> Option<&Arc<Product>> {
        self.products.iter().find(|p| p.name == name)
    }
}

/// `admin.users_file`: a YAML list of admin users; its own syntax errors carry its name and
/// line.
fn users_file(
    path: &std::path::Path,
    loc: &Locator,
) -> Result<(Vec<file::AdminUserFile>, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        loc.invalid(
            "admin.users_file",
            None,
            &format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let users = serde_norway::from_str(&text).map_err(|e| {
        loc.invalid(
            "admin.users_file",
            None,
            &format!("`{}`: {e}", path.display()),
        )
    })?;
    Ok((users, text))
}

fn listeners(f: &file::ListenFile, loc: &Locator) -> Result<Vec<Listener>, ConfigError> {
    let many = f.0.len() > 1;
    let key = |i: usize| {
        if many {
            format!("listen[{i}]")
        } else {
            "listen".to_string()
        }
    };
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in f.0.iter().enumerate() {
        let addr = l.address.0.as_str();
        if out.iter().any(|o| o.address == addr) {
            return Err(loc.invalid(
                &format!("{}.address", key(i)),
                Some(addr),
                &format!("`{addr}` is listed twice"),
            ));
        }
        if l.redirect_https && l.tls.is_some() {
            return Err(loc.invalid(
                &format!("{}.redirect_https", key(i)),
                Some(addr),
                "a TLS listener cannot redirect to itself; use it on a plain listener",
            ));
        }
        let tls = l
            .tls
            .as_ref()
            .map(|t| cert_pair(t, &format!("{}.tls", key(i)), Some(addr), loc))
            .transpose()?;
        out.push(Listener {
            address: addr.to_string(),
            tls,
            redirect_https: l.redirect_https,
        });
    }
    if let Some(i) = out.iter().position(|l| l.redirect_https) {
        if !out.iter().any(|l| l.tls.is_some()) {
            return Err(loc.invalid(
                &format!("{}.redirect_https", key(i)),
                Some(&out[i].address),
                "needs a TLS listener to redirect to",
            ));
        }
    }
    Ok(out)
}

fn cert_pair(
    t: &file::TlsFile,
    key: &str,
    entity: Option<&str>,
    loc: &Locator,
) -> Result<TlsCert, ConfigError> {
    tls::load_cert(&t.cert, &t.key).map_err(|(part, e)| {
        let (k, name) = match part {
            Part::Cert => (format!("{key}.cert"), t.cert.display().to_string()),
            Part::Key => (format!("{key}.key"), t.key.display().to_string()),
        };
        // The file name is on the key's own line; the entity only narrows the search.
        let line = loc.line_of(&name).or_else(|| loc.line(&k, entity));
        ConfigError::Invalid {
            key: k,
            line,
            reason: e,
        }
    })
}

fn upstream_tls(
    u: &file::UpstreamFile,
    key: &str,
    ctx: &str,
    loc: &Locator,
) -> Result<Option<UpstreamTls>, ConfigError> {
    if !u.tls {
        for (set, k) in [(u.sni.is_some(), "sni"), (u.ca.is_some(), "ca")] {
            if set {
                return Err(loc.invalid(
                    &format!("{key}.{k}"),
                    Some(ctx),
                    "only used with `tls: true`",
                ));
            }
        }
        return Ok(None);
    }
    let host = u
        .address
        .0
        .rsplit_once(':')
        .map_or("", |(h, _)| h)
        .trim_matches(['[', ']']);
    let sni = match &u.sni {
        Some(s) => s.clone(),
        None if host.parse::<std::net::IpAddr>().is_err() => host.to_string(),
        None => {
            // No `sni:` in the file: point at the `upstream:` line.
            return Err(ConfigError::Invalid {
                key: format!("{key}.sni"),
                line: loc.line(key, Some(ctx)),
                reason: format!(
                    "TLS to the IP address `{host}` needs `sni`: the name the app's certificate \
                     is verified against"
                ),
            });
        }
    };
    if sni.is_empty() || rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
        return Err(loc.invalid(
            &format!("{key}.sni"),
            Some(ctx),
            &format!("`{sni}` is not a host name"),
        ));
    }
    let ca =
        u.ca.as_ref()
            .map(|p| tls::load_ca(p).map_err(|e| loc.invalid(&format!("{key}.ca"), Some(ctx), &e)))
            .transpose()?;
    let ca_group = ca.as_ref().map_or(0, |c| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for cert in c.iter() {
            cert.borrow_raw_cert().hash(&mut h);
        }
        h.finish()
    });
    Ok(Some(UpstreamTls { sni, ca, ca_group }))
}

fn store_config(s: file::StoreFile, loc: &Locator) -> Result<StoreConfig, ConfigError> {
    let backend = match s.kind {
        StoreKind::Embedded => {
            if s.redis.is_some() {
                return Err(loc.invalid("store.redis", None, "only used with `kind: redis`"));
            }
            StoreBackend::Embedded {
                path: s
                    .path
                    .unwrap_or_else(|| PathBuf::from("data/seatgate.redb")),
            }
        }
        StoreKind::Redis => {
            let r = s
                .redis
                .ok_or_else(|| loc.invalid("store.redis", None, "required with `kind: redis`"))?;
            let target = match (r.url, r.cluster, r.sentinel) {
                (Some(u), None, None) => {
                    RedisTarget::Single(redis_url(&u, "store.redis.url", loc)?)
                }
                (None, Some(c), None) if !c.is_empty() => RedisTarget::Cluster(
                    c.iter()
                        .map(|u| redis_url(u, "store.redis.cluster", loc))
                        .collect::<Result<_, _>>()?,
                ),
                (None, None, Some(sn)) if !sn.urls.is_empty() => RedisTarget::Sentinel {
                    master: sn.master,
                    urls: sn
                        .urls
                        .iter()
                        .map(|u| redis_url(u, "store.redis.sentinel.urls", loc))
                        .collect::<Result<_, _>>()?,
                },
                _ => {
                    return Err(loc.invalid(
                        "store.redis",
                        None,
                        "give exactly one of `url`, `cluster` (non-empty) or `sentinel`",
                    ))
                }
            };
            let prefix = r.prefix.unwrap_or_else(|| "seatgate".into());
            if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                return Err(loc.invalid(
                    "store.redis.prefix",
                    None,
                    "must be non-empty without braces or spaces",
                ));
            }
            StoreBackend::Redis(RedisConfig { target, prefix })
        }
    };
    let flush_interval = s.flush_interval.map_or(Duration::from_secs(5), |d| d.0);
    let sweep_interval = s.sweep_interval.map_or(Duration::from_secs(5), |d| d.0);
    if flush_interval.is_zero() || sweep_interval.is_zero() {
        return Err(loc.invalid("store.flush_interval", None, "intervals must be above zero"));
    }
    Ok(StoreConfig {
        backend,
        flush_interval,
        sweep_interval,
    })
}

fn redis_url(u: &str, key: &str, loc: &Locator) -> Result<String, ConfigError> {
    let rest = u
        .strip_prefix("redis://")
        .or_else(|| u.strip_prefix("rediss://"))
        .ok_or_else(|| loc.invalid(key, Some(u), &format!("`{u}` must start with redis://")))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = hostport.rsplit('@').next().unwrap_or_default();
    file::parse_addr(hostport).map_err(|e| loc.invalid(key, Some(u), &e))?;
    Ok(u.to_string())
}

fn method(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<Method, ConfigError> {
    let up = s.to_ascii_uppercase();
    match up.as_str() {
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => {
            Method::from_bytes(up.as_bytes())
                .map_err(|_| loc.invalid(key, Some(ctx), &format!("unknown HTTP method `{s}`")))
        }
        _ => Err(loc.invalid(key, Some(ctx), &format!("unknown HTTP method `{s}`"))),
    }
}

fn path(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<String, ConfigError> {
    if !s.starts_with('/') || s.contains(char::is_whitespace) {
        return Err(loc.invalid(
            key,
            Some(ctx),
            &format!("`{s}` must be a path starting with /"),
        ));
    }
    Ok(s.to_string())
}

fn header_name(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| loc.invalid(key, Some(ctx), &format!("`{s}` is not a valid header name")))
}

fn header_match(
    h: &file::HeaderMatchFile,
    key: &str,
    ctx: &str,
    loc: &Locator,
) -> Result<HeaderMatch, ConfigError> {
    let test = match (&h.value, &h.contains) {
        (None, None) => TextTest::Present,
        (Some(v), None) => TextTest::Equals(v.clone()),
        (None, Some(c)) => TextTest::Contains(c.clone()),
        (Some(_), Some(_)) => {
            return Err(loc.invalid(key, Some(ctx), "give `value` or `contains`, not both"))
        }
    };
    Ok(HeaderMatch {
        name: header_name(&h.name, &format!("{key}.name"), ctx, loc)?,
        test,
    })
}

fn cookie_name(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<String, ConfigError> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if !ok {
        return Err(loc.invalid(key, Some(ctx), &format!("`{s}` is not a valid cookie name")));
    }
    Ok(s.to_string())
}

fn date_ms(s: &str, key: &str, ctx: &str, loc: &Locator) -> Result<u64, ConfigError> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|e| {
        loc.invalid(
            key,
            Some(ctx),
            &format!("`{s}` is not a date (YYYY-MM-DD or RFC 3339): {e}"),
        )
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

fn product(i: usize, p: file::ProductFile, loc: &Locator) -> Result<Product, ConfigError> {
    let k = |s: &str| format!("products[{i}].{s}");
    let ctx = p.name.as_str();
    if p.name.is_empty()
        || p.name
            .contains(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ':')
    {
        return Err(loc.invalid(
            &k("name"),
            Some(ctx),
            "must be a word without spaces, braces or colons",
        ));
    }
    let path_prefix = path(
        p.path_prefix.as_deref().unwrap_or("/"),
        &k("path_prefix"),
        ctx,
        loc,
    )?;
    let s = &p.session;
    let mut session = SessionPolicy {
        cookie: cookie_name(&s.cookie, &k("session.cookie"), ctx, loc)?,
        idle_timeout: nonzero(s.idle_timeout.0, &k("session.idle_timeout"), ctx, loc)?,
        max_lifetime: nonzero(s.max_lifetime.0, &k("session.max_lifetime"), ctx, loc)?,
        presence_timeout: s.presence_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        expired: s.expired,
        device_cookie: cookie_name(
            s.device_cookie.as_deref().unwrap_or("seatgate_device"),
            &k("session.device_cookie"),
            ctx,
            loc,
        )?,
        standby_timeout: s.standby_timeout.map_or(Duration::from_secs(60), |d| d.0),
        cookie_path: s.cookie_path.clone().unwrap_or_else(|| "/".into()),
        ignore: Vec::new(),
        idle_by: s.idle_by,
        idle_warning: None,
    };
    if session.device_cookie == session.cookie {
        return Err(loc.invalid(
            &k("session.device_cookie"),
            Some(ctx),
            "must differ from session.cookie",
        ));
    }
    if let Some(pt) = session.presence_timeout {
        if pt < Duration::from_secs(3) {
            return Err(loc.invalid(
                &k("session.presence_timeout"),
                Some(ctx),
                "must be at least 3s (or 0 to disable)",
            ));
        }
    }
    let user = match &p.login.user {
        None => UserSource::None,
        Some(u) => match (&u.form_field, &u.header) {
            (Some(f), None) if !f.is_empty() => UserSource::Form(f.clone()),
            (None, Some(h)) => {
                UserSource::Header(header_name(h, &k("login.user.header"), ctx, loc)?)
            }
            _ => {
                return Err(loc.invalid(
                    &k("login.user"),
                    Some(ctx),
                    "give exactly one of `form_field` or `header`",
                ))
            }
        },
    };
    if p.seats_per != SeatsPer::Session && user == UserSource::None {
        return Err(loc.invalid(
            &k("login.user"),
            Some(ctx),
            "required when seats_per is `user` or `user_device`",
        ));
    }
    let login = LoginRule {
        path: path(&p.login.path, &k("login.path"), ctx, loc)?,
        method: method(
            p.login.method.as_deref().unwrap_or("POST"),
            &k("login.method"),
            ctx,
            loc,
        )?,
        user,
    };
    let logout = match &p.logout {
        None => None,
        Some(l) => Some(LogoutRule {
            path: path(&l.path, &k("logout.path"), ctx, loc)?,
            method: l
                .method
                .as_deref()
                .map(|m| method(m, &k("logout.method"), ctx, loc))
                .transpose()?,
        }),
    };

    idle_rules(
        &mut session,
        s,
        &path_prefix,
        &login,
        logout.as_ref(),
        &k,
        ctx,
        loc,
    )?;

    let pools = pools(&p, i, loc)?;
    let mut groups = Vec::new();
    for (gi, g) in p.groups.iter().enumerate() {
        let gk = k(&format!("groups[{gi}]"));
        let pool = match &g.pool {
            None => pools.iter().position(|x| x.default).unwrap_or(0),
            Some(name) => pools.iter().position(|x| &x.name == name).ok_or_else(|| {
                loc.invalid(
                    &format!("{gk}.pool"),
                    Some(&g.name),
                    &format!("unknown pool `{name}`"),
                )
            })?,
        };
        let cap = pools[pool].grants.iter().map(|g| g.seats).sum::<u32>();
        let reserve = g.reserve.unwrap_or(0);
        if reserve > cap {
            return Err(loc.invalid(
                &format!("{gk}.reserve"),
                Some(&g.name),
                &format!(
                    "reserve {reserve} is larger than pool `{}` ({cap} seats)",
                    pools[pool].name
                ),
            ));
        }
        if let (Some(max), r) = (g.max, reserve) {
            if max < r {
                return Err(loc.invalid(
                    &format!("{gk}.max"),
                    Some(&g.name),
                    "max must be at least reserve",
                ));
            }
        }
        groups.push(Group {
            name: g.name.clone(),
            users: g.users.iter().cloned().collect(),
            reserve,
            max: g.max,
            pool,
        });
    }
    let reserved: u32 = groups.iter().map(|g| g.reserve).sum();
    for (pi, pool) in pools.iter().enumerate() {
        let r: u32 = groups
            .iter()
            .filter(|g| g.pool == pi)
            .map(|g| g.reserve)
            .sum();
        let cap: u32 = pool.grants.iter().map(|g| g.seats).sum();
        if r > cap {
            return Err(loc.invalid(
                &k("groups"),
                Some(ctx),
                &format!(
                    "reserves add up to {r}, more than pool `{}` ({cap} seats)",
                    pool.name
                ),
            ));
        }
    }
    let _ = reserved;

    let mut clients = Vec::new();
    let mut kinds = HashSet::new();
    let mut default_at: Option<usize> = None;
    for (ci, c) in p.clients.iter().enumerate() {
        let ck = k(&format!("clients[{ci}]"));
        if !kinds.insert(c.kind.clone()) {
            return Err(loc.invalid(
                &format!("{ck}.kind"),
                Some(&c.kind),
                "duplicate client kind",
            ));
        }
        let matcher = match &c.matcher {
            None => Matcher::default(),
            Some(m) => Matcher {
                path_prefix: m
                    .path_prefix
                    .as_deref()
                    .map(|x| path(x, &format!("{ck}.match.path_prefix"), &c.kind, loc))
                    .transpose()?,
                header: m
                    .header
                    .as_ref()
                    .map(|h| header_match(h, &format!("{ck}.match.header"), &c.kind, loc))
                    .transpose()?,
                user_agent: m.user_agent.clone(),
                method: m
                    .method
                    .as_deref()
                    .map(|x| method(x, &format!("{ck}.match.method"), &c.kind, loc))
                    .transpose()?,
            },
        };
        if matcher.is_default() {
            if let Some(first) = default_at {
                return Err(loc.invalid(
                    &format!("{ck}.match"),
                    Some(&c.kind),
                    &format!("a second default client (clients[{first}] already has no match)"),
                ));
            }
            default_at = Some(ci);
        } else if default_at.is_some() {
            return Err(loc.invalid(
                &format!("{ck}.match"),
                Some(&c.kind),
                "comes after the default client and could never match",
            ));
        }
        let on_full = on_full::on_full(c.on_full.as_ref())
            .map_err(|e| loc.invalid(&format!("{ck}.on_full"), Some(&c.kind), &e))?;
        clients.push(Client {
            kind: c.kind.clone(),
            matcher,
            mode: c.mode,
            on_full,
            builtin_page: c
                .on_full
                .as_ref()
                .is_none_or(|o| o.body.is_none() && o.content_type.is_none()),
        });
    }
    let default_denial = OnFull::builtin();
    let max_login_body = p.max_login_body.unwrap_or(DEFAULT_MAX_LOGIN_BODY);
    if max_login_body == 0 || max_login_body > MAX_LOGIN_BODY_LIMIT {
        return Err(loc.invalid(
            &k("max_login_body"),
            Some(ctx),
            "must be between 1 and 65536 bytes",
        ));
    }
    let self_service = SelfServicePolicy {
        enabled: p
            .self_service
            .as_ref()
            .and_then(|x| x.enabled)
            .unwrap_or(true),
        token_ttl: p
            .self_service
            .as_ref()
            .and_then(|x| x.token_ttl.as_ref())
            .map_or(DEFAULT_TOKEN_TTL, |d| d.0),
        hold: p
            .self_service
            .as_ref()
            .and_then(|x| x.hold.as_ref())
            .map_or(DEFAULT_HOLD, |d| d.0),
    };
    if self_service.token_ttl < Duration::from_secs(1) || self_service.token_ttl > MAX_TOKEN_TTL {
        return Err(loc.invalid(
            &k("self_service.token_ttl"),
            Some(ctx),
            "must be between 1s and 1h",
        ));
    }
    if self_service.hold < Duration::from_secs(1) || self_service.hold > MAX_TOKEN_TTL {
        return Err(loc.invalid(
            &k("self_service.hold"),
            Some(ctx),
            "must be between 1s and 1h",
        ));
    }
    let upstream_tls = upstream_tls(&p.upstream, &k("upstream"), ctx, loc)?;
    let hosts = p.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let pool_keys = pools
        .iter()
        .map(|x| PoolKey::new(&p.name, &x.name))
        .collect();
    Ok(Product {
        name: p.name.clone(),
        upstream: p.upstream.address.0.clone(),
        upstream_tls,
        hosts,
        path_prefix,
        session,
        login,
        logout,
        seats_per: p.seats_per,
        pools,
        pool_keys,
        exempt_users: p.exempt_users.iter().cloned().collect(),
        named_users: p.named_users.iter().cloned().collect(),
        max_sessions: p.max_sessions.map(|n| n.get()),
        groups,
        clients,
        on_store_error: p.on_store_error.unwrap_or(StoreErrorPolicy::FailClosed),
        max_login_body,
        default_denial,
        self_service,
    })
}

/// `session.activity`, `idle_by` and `idle_warning`, checked against the rest of the product:
/// an ignore entry may not cover the login, logout or heartbeat path (those are never ordinary
/// requests), nor match every request; `input` and the warning need the heartbeat.
#[allow(clippy::too_many_arguments)]
fn idle_rules(
    session: &mut SessionPolicy,
    s: &file::SessionFile,
    path_prefix: &str,
    login: &LoginRule,
    logout: Option<&LogoutRule>,
    k: &dyn Fn(&str) -> String,
    ctx: &str,
    loc: &Locator,
) -> Result<(), ConfigError> {
    let heartbeat = super::paths::heartbeat_url(path_prefix);
    let entries = s.activity.as_ref().map_or(&[][..], |a| a.ignore.as_slice());
    for (j, e) in entries.iter().enumerate() {
        let ek = k(&format!("session.activity.ignore[{j}]"));
        let matcher = Matcher {
            path_prefix: e
                .path_prefix
                .as_deref()
                .map(|x| path(x, &format!("{ek}.path_prefix"), ctx, loc))
                .transpose()?,
            header: e
                .header
                .as_ref()
                .map(|h| header_match(h, &format!("{ek}.header"), ctx, loc))
                .transpose()?,
            user_agent: e.user_agent.clone(),
            method: e
                .method
                .as_deref()
                .map(|x| method(x, &format!("{ek}.method"), ctx, loc))
                .transpose()?,
        };
        let mut content_type = Vec::new();
        for t in e.content_type.iter().flat_map(|l| l.0.iter()) {
            let t = t.trim().to_ascii_lowercase();
            if t.is_empty() || t.contains(char::is_whitespace) {
                return Err(loc.invalid(
                    &format!("{ek}.content_type"),
                    Some(ctx),
                    "must be media types or prefixes such as `image/` or `text/css`",
                ));
            }
            content_type.push(t);
        }
        let rule = IgnoreRule {
            matcher,
            content_type,
        };
        let conditional = rule.matcher.header.is_some()
            || rule.matcher.user_agent.is_some()
            || !rule.content_type.is_empty();
        if rule.matcher.path_prefix.is_none() && !conditional {
            return Err(loc.invalid(
                &ek,
                Some(ctx),
                "matches every request (login, logout and heartbeat included): give a \
                 path_prefix, header, user_agent or content_type",
            ));
        }
        if let Some(pp) = &rule.matcher.path_prefix {
            let covers = |target: &str| super::paths::prefix_matches(pp, target);
            let mut hits = vec![("login.path", login.path.as_str())];
            if let Some(l) = logout {
                hits.push(("logout.path", l.path.as_str()));
            }
            hits.push(("the heartbeat", heartbeat.as_str()));
            if let Some((what, target)) = hits.into_iter().find(|(_, t)| covers(t)) {
                // The entry's own line: its value below the product's `ignore:`, not the
                // first `path_prefix:` of the product.
                let line = loc.line_below(ctx, "ignore:", pp);
                return Err(ConfigError::Invalid {
                    key: format!("{ek}.path_prefix"),
                    line: line.or_else(|| loc.line(&format!("{ek}.path_prefix"), Some(ctx))),
                    reason: format!("`{pp}` would match {what} `{target}`, which is never ignored"),
                });
            }
        }
        session.ignore.push(rule);
    }
    if session.idle_by == IdleBy::Input && session.presence_timeout.is_none() {
        return Err(loc.invalid(
            &k("session.idle_by"),
            Some(ctx),
            "`input` needs session.presence_timeout: the heartbeat reports the input",
        ));
    }
    if let Some(w) = &s.idle_warning {
        let w = nonzero(w.0, &k("session.idle_warning"), ctx, loc)?;
        let Some(pt) = session.presence_timeout else {
            return Err(loc.invalid(
                &k("session.idle_warning"),
                Some(ctx),
                "needs session.presence_timeout: the heartbeat shows the warning",
            ));
        };
        let beat = Duration::from_millis(super::paths::beat_period(Some(pt)));
        if w >= session.idle_timeout || w < beat {
            return Err(loc.invalid(
                &k("session.idle_warning"),
                Some(ctx),
                &format!(
                    "must be shorter than idle_timeout and at least one heartbeat ({}s)",
                    beat.as_secs()
                ),
            ));
        }
        session.idle_warning = Some(w);
    }
    Ok(())
}

fn pools(p: &file::ProductFile, i: usize, loc: &Locator) -> Result<Vec<Pool>, ConfigError> {
    let k = |s: &str| format!("products[{i}].{s}");
    let ctx = p.name.as_str();
    match (p.seats, p.pools.is_empty()) {
        (Some(_), false) => {
            Err(loc.invalid(&k("seats"), Some(ctx), "give `seats` or `pools`, not both"))
        }
        (None, true) => Err(loc.invalid(&k("seats"), Some(ctx), "required (or `pools`)")),
        (Some(n), true) => Ok(vec![Pool {
            name: "default".into(),
            grants: vec![Grant {
                seats: n.get(),
                not_before: None,
                expires: None,
            }],
            users: HashSet::new(),
            header: None,
            overflow_ms: None,
            default: true,
        }]),
        (None, false) => {
            let mut out: Vec<Pool> = Vec::new();
            let mut mapped: HashSet<&str> = HashSet::new();
            for (pi, pf) in p.pools.iter().enumerate() {
                let pk = k(&format!("pools[{pi}]"));
                if out.iter().any(|x| x.name == pf.name) {
                    return Err(loc.invalid(
                        &format!("{pk}.name"),
                        Some(&pf.name),
                        "duplicate pool name",
                    ));
                }
                let grants = match (pf.seats, pf.grants.is_empty()) {
                    (Some(_), false) => {
                        return Err(loc.invalid(
                            &format!("{pk}.seats"),
                            Some(&pf.name),
                            "give `seats` or `grants`, not both",
                        ))
                    }
                    (None, true) => {
                        return Err(loc.invalid(
                            &format!("{pk}.seats"),
                            Some(&pf.name),
                            "required (or `grants`)",
                        ))
                    }
                    (Some(n), true) => vec![Grant {
                        seats: n,
                        not_before: None,
                        expires: None,
                    }],
                    (None, false) => pf
                        .grants
                        .iter()
                        .enumerate()
                        .map(|(gi, g)| {
                            let gk = format!("{pk}.grants[{gi}]");
                            let nb = g
                                .not_before
                                .as_deref()
                                .map(|d| date_ms(d, &format!("{gk}.not_before"), &pf.name, loc))
                                .transpose()?;
                            let ex = g
                                .expires
                                .as_deref()
                                .map(|d| date_ms(d, &format!("{gk}.expires"), &pf.name, loc))
                                .transpose()?;
                            if let (Some(a), Some(b)) = (nb, ex) {
                                if b <= a {
                                    return Err(loc.invalid(
                                        &format!("{gk}.expires"),
                                        Some(&pf.name),
                                        "expires before not_before",
                                    ));
                                }
                            }
                            Ok(Grant {
                                seats: g.seats,
                                not_before: nb,
                                expires: ex,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                if grants.iter().map(|g| g.seats).sum::<u32>() == 0 {
                    return Err(loc.invalid(
                        &format!("{pk}.seats"),
                        Some(&pf.name),
                        "must be at least 1",
                    ));
                }
                for u in &pf.users {
                    if !mapped.insert(u.as_str()) {
                        return Err(loc.invalid(
                            &format!("{pk}.users"),
                            Some(&pf.name),
                            &format!(
                                "user `{u}` is already mapped to another pool (pools overlap)"
                            ),
                        ));
                    }
                }
                if pf
                    .overflow
                    .as_ref()
                    .is_some_and(|o| !(o.seat_minutes.is_finite() && o.seat_minutes > 0.0))
                {
                    return Err(loc.invalid(
                        &format!("{pk}.overflow.seat_minutes"),
                        Some(&pf.name),
                        "must be a positive number of seat-minutes",
                    ));
                }
                let header = pf
                    .header
                    .as_ref()
                    .map(|h| header_match(h, &format!("{pk}.header"), &pf.name, loc))
                    .transpose()?;
                out.push(Pool {
                    name: pf.name.clone(),
                    grants,
                    users: pf.users.iter().cloned().collect(),
                    header,
                    overflow_ms: pf
                        .overflow
                        .as_ref()
                        .map(|o| (o.seat_minutes * 60_000.0) as u64),
                    default: pf.default,
                });
            }
            match out.iter().filter(|p| p.default).count() {
                0 if out.len() == 1 => out[0].default = true,
                1 => {}
                0 => {
                    return Err(loc.invalid(
                        &k("pools"),
                        Some(ctx),
                        "mark exactly one pool `default: true`",
                    ))
                }
                _ => {
                    return Err(loc.invalid(
                        &k("pools"),
                        Some(ctx),
                        "more than one pool is `default: true`",
                    ))
                }
            }
            Ok(out)
        }
    }
}

fn nonzero(d: Duration, key: &str, ctx: &str, loc: &Locator) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(loc.invalid(key, Some(ctx), "must be above zero"));
    }
    Ok(d)
}

/// Finds the line a semantic error refers to. YAML values carry no spans after serde, so this
/// looks for the entity's name (a product, client kind …) and then the key's last segment
/// below it; good enough to send an operator to the right place.
struct Locator<'a> {
    src: &'a str,
}

impl Locator<'_> {
    fn invalid(&self, key: &str, entity: Option<&str>, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            line: self.line(key, entity),
            reason: reason.to_string(),
        }
    }

    /// The first line holding the value `text` after the first line holding `below` after
    /// the first line holding `entity` (a value inside a section of an entity).
    fn line_below(&self, entity: &str, below: &str, text: &str) -> Option<usize> {
        let lines: Vec<&str> = self.src.lines().collect();
        let e = lines.iter().position(|l| l.contains(entity))?;
        let b = e + lines[e..].iter().position(|l| l.contains(below))?;
        // `text` as a whole value: `/logout` is not found in `/logout/all`.
        let whole = |l: &str| {
            l.match_indices(text).any(|(i, _)| {
                l[i + text.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || "/-_.~%".contains(c)))
            })
        };
        lines[b..].iter().position(|l| whole(l)).map(|n| b + n + 1)
    }

    /// The first line holding `text` (a file name, an address).
    fn line_of(&self, text: &str) -> Option<usize> {
        self.src
            .lines()
            .position(|l| l.contains(text))
            .map(|n| n + 1)
    }

    fn line(&self, key: &str, entity: Option<&str>) -> Option<usize> {
        let last = key.rsplit('.').next().unwrap_or(key);
        let last = last.split('[').next().unwrap_or(last);
        let lines: Vec<&str> = self.src.lines().collect();
        let start = entity
            .and_then(|e| lines.iter().position(|l| l.contains(e)))
            .unwrap_or(0);
        let needle = format!("{last}:");
        lines[start..]
            .iter()
            .position(|l| l.contains(&needle))
            .map(|n| start + n + 1)
            .or_else(|| entity.map(|_| start + 1))
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
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const PRODUCT: &str = "products:
  - name: crm
    upstream: UPSTREAM
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login }
    seats: 1
";

    fn cfg(listen: &str, upstream: &str, extra: &str) -> Result<Config, String> {
        let yaml = format!(
            "listen: {listen}\nadmin: {{ listen: 127.0.0.1:9090 }}\nstore: {{ kind: embedded }}\n{extra}{}",
            PRODUCT.replace("UPSTREAM", upstream)
        );
        parse(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn listen_is_a_string_or_a_list() {
        let c = cfg("127.0.0.1:8080", "app:80", "").unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].shape(), ("127.0.0.1:8080", false, false));
        let c = cfg("[\"127.0.0.1:8080\", \"[::1]:8081\"]", "app:80", "").unwrap();
        let shapes: Vec<_> = c.listen.iter().map(|l| l.shape()).collect();
        assert_eq!(
            shapes,
            [
                ("127.0.0.1:8080", false, false),
                ("[::1]:8081", false, false)
            ]
        );
        assert!(c.access_log.is_none());
        assert!(c.products[0].upstream_tls.is_none());
    }

    #[test]
    fn listener_and_access_log_errors() {
        let e = cfg("[127.0.0.1:8080, 127.0.0.1:8080]", "app:80", "").unwrap_err();
        assert!(
            e.contains("listen[1].address") && e.contains("listed twice"),
            "{e}"
        );
        let e = cfg("[127.0.0.1:9090]", "app:80", "").unwrap_err();
        assert!(
            e.contains("admin.listen") && e.contains("must differ"),
            "{e}"
        );
        let e = cfg("[]", "app:80", "").unwrap_err();
        assert!(e.contains("at least one listener"), "{e}");
        let e = cfg("127.0.0.1:x", "app:80", "").unwrap_err();
        assert!(e.contains("invalid port") && e.contains("line 1"), "{e}");
        let e = cfg(
            "127.0.0.1:8080",
            "app:80",
            "access_log: { path: a.log, stdout: true }\n",
        )
        .unwrap_err();
        assert!(e.contains("access_log (line 4): give exactly one"), "{e}");
        let c = cfg("127.0.0.1:8080", "app:80", "access_log: { stdout: true }\n").unwrap();
        assert_eq!(c.access_log, Some(AccessLogTarget::Stdout));
    }

    #[test]
    fn upstream_tls_takes_its_name_from_the_host() {
        let c = cfg(
            "127.0.0.1:8080",
            "{ address: \"crm.internal:443\", tls: true }",
            "",
        )
        .unwrap();
        let t = c.products[0].upstream_tls.as_ref().unwrap();
        assert_eq!(t.sni, "crm.internal");
        assert!(t.ca.is_none());
        assert_eq!(c.products[0].upstream, "crm.internal:443");
        let c = cfg(
            "127.0.0.1:8080",
            "{ address: \"10.1.2.3:443\", tls: true, sni: crm.example.com }",
            "",
        )
        .unwrap();
        assert_eq!(
            c.products[0].upstream_tls.as_ref().unwrap().sni,
            "crm.example.com"
        );
        let e = cfg(
            "127.0.0.1:8080",
            "{ address: \"app:443\", tls: true, sni: \"a b\" }",
            "",
        )
        .unwrap_err();
        assert!(
            e.contains("products[0].upstream.sni") && e.contains("not a host name"),
            "{e}"
        );
        let e = cfg("127.0.0.1:8080", "{ address: \"app\", tls: true }", "").unwrap_err();
        assert!(e.contains("must be host:port"), "{e}");
    }

    fn idle_cfg(session_extra: &str) -> Result<Config, String> {
        let yaml = format!(
            "listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090 }}
store: {{ kind: embedded }}
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
{session_extra}
    login: {{ path: /app/login }}
    logout: {{ path: /app/logout }}
    seats: 1
"
        );
        parse(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn idle_rules_are_read_and_default_to_requests() {
        let c = idle_cfg("").unwrap();
        let s = &c.products[0].session;
        assert_eq!(
            (s.idle_by, s.idle_warning, s.ignore.len()),
            (IdleBy::Requests, None, 0)
        );
        let c = idle_cfg(
            "      presence_timeout: 90s
      idle_by: input
      idle_warning: 2m
      activity:
        ignore:
          - { path_prefix: /app/api/poll }
          - { header: { name: X-Requested-With, value: XMLHttpRequest } }
          - { content_type: [Image/, text/css] }
          - { path_prefix: /static, method: GET, content_type: application/javascript }",
        )
        .unwrap();
        let s = &c.products[0].session;
        assert_eq!(s.idle_by, IdleBy::Input);
        assert_eq!(s.idle_warning, Some(Duration::from_secs(120)));
        assert_eq!(s.ignore.len(), 4);
        assert_eq!(
            s.ignore[0].matcher.path_prefix.as_deref(),
            Some("/app/api/poll")
        );
        assert_eq!(s.ignore[2].content_type, vec!["image/", "text/css"]);
        assert_eq!(s.ignore[3].matcher.method, Some(Method::GET));
    }

    #[test]
    fn idle_rule_errors_name_the_key_and_line() {
        let ignore = |entry: &str| {
            idle_cfg(&format!(
                "      activity:\n        ignore:\n          - {entry}"
            ))
            .unwrap_err()
        };
        assert_eq!(
            ignore("{ path_prefix: /app }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/app` would match \
             login.path `/app/login`, which is never ignored"
        );
        assert_eq!(
            ignore("{ path_prefix: /app/logout }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/app/logout` would \
             match logout.path `/app/logout`, which is never ignored"
        );
        assert_eq!(
            ignore("{ path_prefix: /.seatgate }"),
            "products[0].session.activity.ignore[0].path_prefix (line 13): `/.seatgate` would \
             match the heartbeat `/.seatgate/heartbeat`, which is never ignored"
        );
        assert!(
            ignore("{ method: GET }").starts_with(
                "products[0].session.activity.ignore[0] (line 12): matches every request"
            ),
            "{}",
            ignore("{ method: GET }")
        );
        assert!(ignore("{ path_prefix: /x, colour: red }").contains("unknown field `colour`"));
        assert!(ignore("{ content_type: \"image/ png\" }").contains("content_type"));
        assert_eq!(
            idle_cfg("      idle_by: input").unwrap_err(),
            "products[0].session.idle_by (line 11): `input` needs session.presence_timeout: \
             the heartbeat reports the input"
        );
        assert!(idle_cfg("      idle_by: inputs")
            .unwrap_err()
            .contains("unknown variant `inputs`"));
        assert_eq!(
            idle_cfg("      idle_warning: 2m").unwrap_err(),
            "products[0].session.idle_warning (line 11): needs session.presence_timeout: the \
             heartbeat shows the warning"
        );
        assert_eq!(
            idle_cfg("      presence_timeout: 90s\n      idle_warning: 20m").unwrap_err(),
            "products[0].session.idle_warning (line 12): must be shorter than idle_timeout and \
             at least one heartbeat (30s)"
        );
    }
}
