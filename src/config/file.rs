//! The YAML file format, exactly as operators write it.
//!
//! Every struct denies unknown keys so a typo is an error, never a silently ignored setting.
//! Whatever can be checked on a single value (durations, addresses, non-zero seat counts,
//! enum words) is checked while deserializing, so serde_norway's error carries the line and
//! column. Cross-field rules live in `validate/`, one file per section.

// The enums a file names are config's own words; re-exported so the file format reads whole.
pub use super::kinds::{Expired, IdleBy, Mode, Permission, Role, StoreErrorPolicy, StoreKind};
pub use crate::domain::SeatsPer;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: ListenFile,
    pub admin: AdminFile,
    pub store: StoreFile,
    pub products: Vec<ProductFile>,
    #[serde(default)]
    pub audit: Option<AuditFile>,
    /// Worker threads of the proxy service; default: number of cores.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Let idle worker threads take tasks queued on busy ones (pingora's `work_stealing`);
    /// off by default (docs/benchmarks.md has the measurement behind that).
    #[serde(default)]
    pub work_stealing: bool,
    /// One JSON line per request, to a file or stdout; off when absent.
    #[serde(default)]
    pub access_log: Option<AccessLogFile>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (load balancers);
    /// from anyone else those headers are replaced, never appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Downstream timeouts against slow clients (slowloris).
    #[serde(default)]
    pub timeouts: Option<TimeoutsFile>,
}

/// `timeouts`: how long a client may take to send its request head, to send each piece of
/// its body, and to start its next request on a kept-alive connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    #[serde(default)]
    pub header: Option<Dur>,
    #[serde(default)]
    pub body: Option<Dur>,
    #[serde(default)]
    pub idle: Option<Dur>,
}

/// An address range (`10.0.0.0/8`, `::1/128`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Cidr)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address range (10.0.0.0/8) or an address"
                ))
            })
    }
}

/// `listen`: one `host:port`, or a list of such strings and
/// `{ address, tls: { cert, key }, redirect_https }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFile(pub Vec<ListenerFile>);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub address: Addr,
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// A plain listener that answers every request with a redirect to the TLS listener.
    #[serde(default)]
    pub redirect_https: bool,
}

/// PEM files: the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

// Visitors rather than untagged enums, so serde_norway points errors at the bad value's line
// (an untagged enum only says "did not match any variant" at the enclosing map).
impl<'de> Deserialize<'de> for ListenFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListenFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address host:port, or a list of addresses and { address, tls }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ListenFile, E> {
                Ok(ListenFile(vec![ListenerFile::plain(
                    AddrVisitor.visit_str(s)?,
                )]))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<ListenFile, A::Error> {
                let one =
                    ListenerFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(ListenFile(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ListenFile, A::Error> {
                let mut out = Vec::new();
                while let Some(ListenerEntry(l)) = seq.next_element()? {
                    out.push(l);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(
                        "at least one listener is required",
                    ));
                }
                Ok(ListenFile(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl ListenerFile {
    fn plain(address: Addr) -> Self {
        ListenerFile {
            address,
            tls: None,
            redirect_https: false,
        }
    }
}

struct ListenerEntry(ListenerFile);

impl<'de> Deserialize<'de> for ListenerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListenerEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "an address host:port or { address, tls: { cert, key }, redirect_https }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ListenerEntry, E> {
                Ok(ListenerEntry(ListenerFile::plain(
                    AddrVisitor.visit_str(s)?,
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<ListenerEntry, A::Error> {
                ListenerFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(ListenerEntry)
            }
        }
        d.deserialize_any(V)
    }
}

/// `upstream`: `host:port`, or `{ address, tls: true, sni, ca }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub address: Addr,
    #[serde(default)]
    pub tls: bool,
    /// The name sent in SNI and verified against the app's certificate; default: the
    /// address's host when it is a name.
    #[serde(default)]
    pub sni: Option<String>,
    /// A PEM bundle of the CAs to trust for the app's certificate; default: the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

struct UpstreamEntry(UpstreamFile);

impl<'de> Deserialize<'de> for UpstreamEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UpstreamEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address host:port or { address, tls, sni, ca }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<UpstreamEntry, E> {
                Ok(UpstreamEntry(UpstreamFile {
                    address: AddrVisitor.visit_str(s)?,
                    tls: false,
                    sni: None,
                    ca: None,
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<UpstreamEntry, A::Error> {
                UpstreamFile::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(UpstreamEntry)
            }
        }
        d.deserialize_any(V)
    }
}

fn upstream<'de, D: Deserializer<'de>>(d: D) -> Result<UpstreamFile, D::Error> {
    UpstreamEntry::deserialize(d).map(|u| u.0)
}

/// `access_log`: exactly one of `path` and `stdout: true`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub stdout: bool,
}

/// A `host:port` whose port parses; hosts are resolved when the gateway starts,
/// not by `check-config` (an upstream may legitimately be down or not yet in DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr(pub String);

struct AddrVisitor;

impl serde::de::Visitor<'_> for AddrVisitor {
    type Value = Addr;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an address host:port")
    }
    // Checked inside the visitor so serde_norway reports the value's own line.
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Addr, E> {
        parse_addr(s).map_err(E::custom)?;
        Ok(Addr(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(AddrVisitor)
    }
}

pub fn parse_addr(s: &str) -> Result<(), String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{s}` must be host:port"))?;
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return Err(format!("address `{s}` has no valid host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("address `{s}` has an invalid port `{port}`"))?;
    Ok(())
}

/// A humantime duration ("90s", "20m", "1h").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    /// A visitor rather than an untagged enum: untagged buffering would make serde_norway
    /// report the enclosing map's position instead of the bad value's line.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as \"90s\", \"20m\" or \"1h\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dur, E> {
                match n {
                    0 => Ok(Dur(Duration::ZERO)),
                    n => Err(E::custom(format!(
                        "duration `{n}` needs a unit, e.g. \"{n}s\" or \"{n}m\""
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dur, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("duration `{n}` is negative"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s.trim())
                    .map(Dur)
                    .map_err(|e| E::custom(format!("invalid duration `{s}`: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Addr,
    /// Serve the admin listener over TLS (PEM files, re-read on reload).
    #[serde(default)]
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub users: Vec<AdminUserFile>,
    /// More users, from a YAML file holding a list like `users` (a Kubernetes Secret); read
    /// at start and on every reload.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Session lifetime of the admin page's own login cookie.
    #[serde(default)]
    pub session_ttl: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserFile {
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    /// For `role: domain`: the products this admin may see and control.
    #[serde(default)]
    pub products: Vec<String>,
    /// `view` only, or `control` (view and end/pause). Default: control.
    #[serde(default)]
    pub permission: Option<Permission>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub kind: StoreKind,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub redis: Option<RedisFile>,
    /// How often batched activity (last-seen times) is written to the store.
    #[serde(default)]
    pub flush_interval: Option<Dur>,
    /// How often expired seats are swept (they never count as in use even before that).
    #[serde(default)]
    pub sweep_interval: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
    #[serde(default)]
    pub sentinel: Option<SentinelFile>,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    pub master: String,
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    pub path: PathBuf,
    /// Write a keyed hash instead of the user name.
    #[serde(default)]
    pub hash_users: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductFile {
    pub name: String,
    #[serde(deserialize_with = "upstream")]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub session: SessionFile,
    pub login: LoginFile,
    #[serde(default)]
    pub logout: Option<LogoutFile>,
    #[serde(default)]
    pub seats_per: SeatsPer,
    /// The concurrent pool; `pools` may replace it with several license types.
    #[serde(default)]
    pub seats: Option<NonZeroU32>,
    #[serde(default)]
    pub pools: Vec<PoolFile>,
    #[serde(default)]
    pub exempt_users: Vec<String>,
    /// Users that are always allowed and never counted (named-user licenses).
    #[serde(default)]
    pub named_users: Vec<String>,
    /// Per-user cap on concurrent sessions (across devices).
    #[serde(default)]
    pub max_sessions: Option<NonZeroU32>,
    #[serde(default)]
    pub groups: Vec<GroupFile>,
    #[serde(default)]
    pub clients: Vec<ClientFile>,
    /// What to do when the store does not answer.
    #[serde(default)]
    pub on_store_error: Option<StoreErrorPolicy>,
    /// Largest login body the gateway reads to find the user name.
    #[serde(default)]
    pub max_login_body: Option<usize>,
    /// Offering a user denied for lack of a seat to end one of their own sessions.
    #[serde(default)]
    pub self_service: Option<SelfServiceFile>,
    /// The waiting line of every pool of the product (a pool's own `queue` overrides it).
    #[serde(default)]
    pub queue: Option<QueueFile>,
}

/// `queue`: a fair waiting line for browsers refused for want of a seat. Every key optional;
/// a pool's keys override its product's one by one.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long a freed seat waits for the head of the line.
    #[serde(default)]
    pub hold: Option<Dur>,
    /// A ticket whose page stops polling for this long leaves the line.
    #[serde(default)]
    pub abandon_after: Option<Dur>,
    /// A ticket waiting longer than this expires.
    #[serde(default)]
    pub max_wait: Option<Dur>,
    /// Tickets in line at most; a login past it gets the plain denial.
    #[serde(default)]
    pub max_length: Option<u32>,
    /// A newcomer whose login can be served at once goes through even while others wait.
    #[serde(default)]
    pub barging: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceFile {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long the offer's buttons stay valid.
    #[serde(default)]
    pub token_ttl: Option<Dur>,
    /// How long the seat freed by self-service waits for the user's next login.
    #[serde(default)]
    pub hold: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    pub cookie: String,
    pub idle_timeout: Dur,
    pub max_lifetime: Dur,
    #[serde(default)]
    pub presence_timeout: Option<Dur>,
    #[serde(default)]
    pub expired: Expired,
    #[serde(default)]
    pub device_cookie: Option<String>,
    /// How long a reserved login seat waits for the app's answer / a second request.
    #[serde(default)]
    pub standby_timeout: Option<Dur>,
    /// Path attribute used when the gateway clears the session cookie.
    #[serde(default)]
    pub cookie_path: Option<String>,
    /// Requests that are served but do not count as activity (background polling, assets).
    #[serde(default)]
    pub activity: Option<ActivityFile>,
    /// What resets the idle timer: any request that is not ignored, or the person's input.
    #[serde(default)]
    pub idle_by: IdleBy,
    /// How long before an idle end the user's pages show a warning with "Stay signed in".
    #[serde(default)]
    pub idle_warning: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityFile {
    #[serde(default)]
    pub ignore: Vec<IgnoreFile>,
}

/// A client `match` plus the response's `content_type`: all given conditions must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreFile {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub header: Option<HeaderMatchFile>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// Media type prefixes of the response (`image/`, `text/css`, `application/javascript`).
    #[serde(default)]
    pub content_type: Option<StringOrList>,
}

/// One string or a list of strings (`content_type: image/` or `content_type: [image/, font/]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringOrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringOrList, E> {
                Ok(StringOrList(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StringOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringOrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub user: Option<UserSourceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSourceFile {
    #[serde(default)]
    pub form_field: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutFile {
    pub path: String,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub name: String,
    #[serde(default)]
    pub seats: Option<u32>,
    #[serde(default)]
    pub grants: Vec<GrantFile>,
    /// Users mapped to this pool by name.
    #[serde(default)]
    pub users: Vec<String>,
    /// Users mapped to this pool by a request header (e.g. set by an SSO proxy).
    #[serde(default)]
    pub header: Option<HeaderMatchFile>,
    /// Seat-minutes usable only when all seats are taken (pay-per-use).
    #[serde(default)]
    pub overflow: Option<OverflowFile>,
    /// The pool taken when no mapping matches. Exactly one pool may be the default.
    #[serde(default)]
    pub default: bool,
    /// This pool's waiting line, key by key over the product's `queue`.
    #[serde(default)]
    pub queue: Option<QueueFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    pub seats: u32,
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowFile {
    /// Fractions allowed (0.5 = 30 seat-seconds); metered to the second.
    pub seat_minutes: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub name: String,
    pub users: Vec<String>,
    #[serde(default)]
    pub reserve: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
    #[serde(default)]
    pub pool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub kind: String,
    #[serde(default, rename = "match")]
    pub matcher: Option<MatchFile>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_full: Option<OnFullFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub header: Option<HeaderMatchFile>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchFile {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnFullFile {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub page: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
