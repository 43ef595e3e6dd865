//! Test harness: a real upstream app (hyper, in-process, on port 0), the real seatgate binary
//! with a config written per test, and a plain HTTP client.
//!
//! The gateway never binds in tests: the harness binds its listeners on port 0 and hands the
//! sockets to the child (`run --listen-fd`), so no two tests can race for a port, and a
//! restarted gateway serves the very same sockets (connections made while it is down wait in
//! the backlog instead of being refused).

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const PASSWORD: &str = "pw";

/// What the upstream saw, for asserting that a denied request never reached it.
#[derive(Default)]
pub struct Seen {
    pub by_path: Mutex<HashMap<String, u64>>,
    pub last_headers: Mutex<HashMap<String, Vec<String>>>,
    pub last_body: Mutex<Vec<u8>>,
    pub sessions: AtomicU64,
    /// Session cookie values the app issued and still honours (login adds, logout, sign-off
    /// and rotation remove); only [`AppOpts::strict`] apps refuse the others.
    pub issued: Mutex<std::collections::HashSet<String>>,
}

impl Seen {
    pub fn count(&self, path: &str) -> u64 {
        *self.by_path.lock().unwrap().get(path).unwrap_or(&0)
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    pub cookie: String,
}

/// How the fake app behaves beyond the defaults every test relies on.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppOpts {
    /// Only session cookies the app issued (and has not dropped) are accepted: a request with
    /// another value gets 401 under `/api/`, else a 302 to `/login` that deletes the cookie.
    /// The app's `/slow` answers its refusal after its usual delay.
    pub strict: bool,
    /// `/logout` wants POST: a GET is answered 405 and the session stays.
    pub logout_post_only: bool,
    /// `GET /login` with a session cookie signs that session off (the page deletes the
    /// cookie), as apps do that show a fresh login form.
    pub login_page_signs_off: bool,
}

/// A legacy app: `POST /login` (form `username`, `password`, or header X-User) sets the session
/// cookie when the password is right (a re-login drops the session cookie it came with, as
/// Django's `cycle_key` does; user `slowpoke` is answered after 1.5 s); `/logout` clears it;
/// `/page` answers HTML; everything else echoes what it got as JSON.
///
/// The app's own word on its session cookie, on ordinary pages (200, HTML):
/// - `/signoff`: deletes it with `Max-Age=0` (its own sign-off link);
/// - `/signoff-expires`: deletes it with an `Expires` in the past and no `Max-Age`;
/// - `/refresh-maxage`: re-sets the same value with an `Expires` in the past *and*
///   `Max-Age=3600`: Max-Age wins (RFC 6265 5.3 step 3), so this is not a deletion;
/// - `/rotate`: sets a new value (`r{n}-…`, id rotation); the old one is dropped.
pub async fn upstream(cookie: &str) -> Upstream {
    upstream_with(cookie, AppOpts::default()).await
}

pub async fn upstream_with(cookie: &str, opts: AppOpts) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let cookie_name = cookie.to_string();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = s2.clone();
            let cookie = cookie_name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, seen.clone(), cookie.clone(), opts));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        seen,
        cookie: cookie.to_string(),
    }
}

fn cookie_in(headers: &HashMap<String, Vec<String>>, name: &str) -> Option<String> {
    headers.get("cookie")?.iter().find_map(|h| {
        h.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
    })
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Seen>,
    cookie: String,
    opts: AppOpts,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    *seen
        .by_path
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    *seen.last_headers.lock().unwrap() = headers.clone();
    let method = req.method().clone();
    let body = req.into_body().collect().await?.to_bytes();
    *seen.last_body.lock().unwrap() = body.to_vec();
    let resp = |status: u16| Response::builder().status(status);
    let current = cookie_in(&headers, &cookie);
    let lower = path.to_ascii_lowercase();
    let is_login = method == "POST" && (lower.contains("login") || path.ends_with("/sessions"));
    let is_logout = lower.contains("logout") || path.ends_with("/sessions/current");
    if opts.strict && !is_login && !is_logout {
        if let Some(v) = current.as_deref() {
            if !seen.issued.lock().unwrap().contains(v) {
                if path == "/slow" {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                let r = if path.starts_with("/api/") {
                    resp(401).body(Full::new(Bytes::from_static(b"not logged in")))
                } else {
                    resp(302)
                        .header("location", "/login")
                        .header("set-cookie", format!("{cookie}=; Path=/; Max-Age=0"))
                        .body(Full::new(Bytes::new()))
                };
                return Ok(r.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))));
            }
        }
    }
    let page = |body: &'static str| {
        resp(200)
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(format!(
                "<html><head><title>t</title></head><body><p>{body}</p></body></html>"
            ))))
    };
    let drop_current = || {
        if let Some(v) = current.as_deref() {
            seen.issued.lock().unwrap().remove(v);
        }
    };
    let r = match (method.as_str(), path.as_str()) {
        ("GET", "/login") if opts.login_page_signs_off && current.is_some() => {
            drop_current();
            page("please log in").map(|mut r| {
                r.headers_mut().append(
                    "set-cookie",
                    format!("{cookie}=; Path=/; Max-Age=0").parse().unwrap(),
                );
                r
            })
        }
        ("POST", p) if p.to_ascii_lowercase().contains("login") || p.ends_with("/sessions") => {
            let form: HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            let ok = form
                .iter()
                .any(|(k, v)| k.to_ascii_lowercase().contains("password") && v == PASSWORD)
                || headers.get("x-password").is_some_and(|v| v[0] == PASSWORD);
            if form.get("username").is_some_and(|u| u == "slowpoke") {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            if ok {
                drop_current();
                let n = seen.sessions.fetch_add(1, Ordering::SeqCst);
                let sid = format!("s{n}-{:x}", rand::random::<u64>());
                seen.issued.lock().unwrap().insert(sid.clone());
                resp(302)
                    .header("location", "/home")
                    .header("set-cookie", "tracking=1; Path=/")
                    .header("set-cookie", format!("{cookie}={sid}; Path=/; HttpOnly"))
                    .body(Full::new(Bytes::new()))
            } else {
                resp(401).body(Full::new(Bytes::from_static(b"wrong password")))
            }
        }
        ("GET", p) if opts.logout_post_only && p.to_ascii_lowercase().contains("logout") => {
            resp(405)
                .header("allow", "POST")
                .body(Full::new(Bytes::from_static(b"use POST to log out")))
        }
        (_, p) if p.to_ascii_lowercase().contains("logout") || p.ends_with("/sessions/current") => {
            drop_current();
            resp(302)
                .header("location", "/login")
                .header("set-cookie", format!("{cookie}=; Path=/; Max-Age=0"))
                .body(Full::new(Bytes::new()))
        }
        (_, "/signoff") => {
            drop_current();
            page("signed off").map(|mut r| {
                r.headers_mut().append(
                    "set-cookie",
                    format!("{cookie}=; Path=/; Max-Age=0").parse().unwrap(),
                );
                r
            })
        }
        (_, "/signoff-expires") => {
            drop_current();
            page("signed off").map(|mut r| {
                r.headers_mut().append(
                    "set-cookie",
                    format!("{cookie}=deleted; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
                        .parse()
                        .unwrap(),
                );
                r
            })
        }
        (_, "/refresh-maxage") => {
            let v = current.clone().unwrap_or_default();
            page("refreshed").map(|mut r| {
                r.headers_mut().append(
                    "set-cookie",
                    format!(
                        "{cookie}={v}; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=3600"
                    )
                    .parse()
                    .unwrap(),
                );
                r
            })
        }
        (_, "/rotate") => {
            drop_current();
            let n = seen.sessions.fetch_add(1, Ordering::SeqCst);
            let sid = format!("r{n}-{:x}", rand::random::<u64>());
            seen.issued.lock().unwrap().insert(sid.clone());
            page("rotated").map(|mut r| {
                r.headers_mut().append(
                    "set-cookie",
                    format!("{cookie}={sid}; Path=/; HttpOnly").parse().unwrap(),
                );
                r
            })
        }
        (_, "/slow") => {
            // An in-flight request for reload/upgrade tests.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            resp(200).body(Full::new(Bytes::from_static(b"slow done")))
        }
        (_, "/page") => resp(200)
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(
                b"<html><head><title>t</title></head><body><p>hello</p></body></html>",
            ))),
        _ => {
            let echo = serde_json::json!({
                "method": method.as_str(),
                "path": path,
                "headers": headers,
                "body_len": body.len(),
            });
            resp(200)
                .header("content-type", "application/json")
                .header("set-cookie", "a=1; Path=/")
                .header("set-cookie", "b=2; Path=/")
                .body(Full::new(Bytes::from(echo.to_string())))
        }
    };
    Ok(r.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// A port reserved for this test, for a server that must be given a number and cannot be
/// handed a socket (redis-server, or the gateway binding its own config). The reservation is
/// a socket bound to it with SO_REUSEADDR and never listening, held until the test process
/// ends (nextest runs each test in its own): the kernel hands the port to no `:0` bind and no
/// other process can bind it without SO_REUSEADDR, while a server that sets it (Redis and
/// pingora both do) binds and listens on it normally. `OwnRedis` also checks the pid of the
/// server it reaches.
pub fn free_port() -> u16 {
    static RESERVED: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.set_reuseaddr(true).unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    RESERVED.lock().unwrap().push(s);
    port
}

/// A port that refuses connections for as long as the returned socket lives: bound, so no
/// one else can take it, but not listening.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// A listening socket on a port of the kernel's choosing, for the gateway to inherit.
pub fn bound() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Gives `sockets` to the child `cmd` starts (`--listen-fd`, one per socket): the child's
/// copies of the fds stay open across exec, and it serves them instead of binding.
pub fn pass_sockets(cmd: &mut Command, sockets: &[&std::net::TcpListener]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    for fd in &fds {
        cmd.arg("--listen-fd").arg(fd.to_string());
    }
    // SAFETY: between fork and exec only fcntl runs (async-signal-safe), on fds this process
    // owns; it clears close-on-exec in the child alone, so no other child inherits them.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// argon2id of "secret" (admin users in test configs).
pub const ADMIN_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2VhdGdhdGV0ZXN0c2FsdA$xwt22nhxGHOng06uYvCr5kGuuUXnPByRF5OnP0l5ZK8";

pub struct Gateway {
    pub child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    pub config_path: PathBuf,
    /// The listening sockets every spawn of this gateway serves (proxy, admin, then extras).
    pub sockets: Vec<std::net::TcpListener>,
}

impl Gateway {
    /// Writes `yaml` (with `{listen}`, `{admin}`, `{dir}`, `{upstream}` … replaced) and starts
    /// the gateway, waiting until its admin `/healthz` answers.
    pub async fn start(yaml: &str, vars: &[(&str, String)]) -> Gateway {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(dir, yaml, vars, Vec::new()).await
    }

    /// As `start`, in `dir`, also serving `extra` sockets (listeners the config names by the
    /// port the caller put in `vars`).
    pub async fn start_in(
        dir: Arc<tempfile::TempDir>,
        yaml: &str,
        vars: &[(&str, String)],
        extra: Vec<std::net::TcpListener>,
    ) -> Gateway {
        let mut sockets = vec![bound(), bound()];
        sockets.extend(extra);
        let listen = sockets[0].local_addr().unwrap();
        let admin = sockets[1].local_addr().unwrap();
        Self::launch(dir, yaml, vars, sockets, listen, admin).await
    }

    /// As `start`, but handed no sockets: the gateway binds its configured addresses itself,
    /// as every deployment without socket activation does (on `free_port()` reservations).
    pub async fn start_binding(yaml: &str, vars: &[(&str, String)]) -> Gateway {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (listen, admin) = (at(free_port()), at(free_port()));
        Self::launch(dir, yaml, vars, Vec::new(), listen, admin).await
    }

    async fn launch(
        dir: Arc<tempfile::TempDir>,
        yaml: &str,
        vars: &[(&str, String)],
        sockets: Vec<std::net::TcpListener>,
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> Gateway {
        let mut text = yaml
            .replace("{listen}", &listen.to_string())
            .replace("{admin}", &admin.to_string())
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{admin_hash}", ADMIN_HASH);
        for (k, v) in vars {
            text = text.replace(&format!("{{{k}}}"), v);
        }
        let config_path = dir.path().join("seatgate.yaml");
        std::fs::write(&config_path, text).unwrap();
        let mut g = Gateway {
            child: None,
            listen,
            admin,
            dir,
            config_path,
            sockets,
        };
        g.spawn().await;
        g
    }

    pub async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seatgate"));
        cmd.args(["run", "--config"]).arg(&self.config_path);
        pass_sockets(&mut cmd, &self.sockets.iter().collect::<Vec<_>>());
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/healthz", self.admin);
        loop {
            if let Ok(r) = client().get(&url).send().await {
                if r.status() == 200 && tokio::net::TcpStream::connect(self.listen).await.is_ok() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("gateway exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything that was not already durable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GETs `path` through the gateway with `cookie` as the Cookie header.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` through the gateway as the session `SID={sid}`.
    pub async fn get_with_sid(&self, path: &str, sid: &str) -> reqwest::Response {
        self.get_with_cookie(path, &format!("SID={sid}")).await
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric line, e.g. `seatgate_seats_in_use{product="crm",state="active"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// GETs the admin API `path` as `admin` (the super admin of the test configs): its JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(self.admin_url(path))
            .basic_auth("admin", Some("secret"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `seatgate_seat_releases_total` of product `crm` for `reason`.
    pub async fn releases(&self, reason: &str) -> f64 {
        self.metric(&format!(
            r#"seatgate_seat_releases_total{{product="crm",reason="{reason}"}}"#
        ))
        .await
    }

    pub async fn usage(&self) -> serde_json::Value {
        self.admin_json("/api/usage").await
    }

    /// Every session the admin API lists.
    pub async fn sessions(&self) -> Vec<serde_json::Value> {
        serde_json::from_value(self.admin_json("/api/sessions").await).unwrap()
    }

    /// Seats in use of `product` (all pools), from the admin API.
    pub async fn in_use(&self, product: &str) -> u64 {
        self.usage()
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["product"] == product)
            .map(|u| u["in_use"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The session cookie value from a response, if it set one.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().find_map(|v| {
        let s = v.to_str().ok()?;
        let (pair, _) = s.split_once(';').unwrap_or((s, ""));
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// Logs in through the gateway; returns the response.
/// Reads one response with a `Content-Length` body from `c`.
pub async fn read_response(c: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(c, &mut buf),
        )
        .await
        .expect("response in time")
        .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// A form login posted to `path` (any spelling of the login path).
pub async fn login_at(g: &Gateway, path: &str, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(g.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password={password}"))
        .send()
        .await
        .unwrap()
}

pub async fn login(
    g: &Gateway,
    user: &str,
    password: &str,
    extra_cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(g.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password={password}"));
    if let Some(c) = extra_cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// Polls `f` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A standard single-product config; `{seats}`, `{idle}`, `{seats_per}`, `{expired}` are
/// filled by the caller through `vars`.
pub const BASIC: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
store:
  kind: embedded
  path: "{dir}/seats.redb"
  sweep_interval: {sweep}
  flush_interval: 200ms
audit:
  path: "{dir}/audit.jsonl"
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: {idle}
      max_lifetime: {lifetime}
      expired: {expired}
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats_per: {seats_per}
    seats: {seats}
    exempt_users: [svc-backup]
"#;

pub fn basic_vars(up: &Upstream, seats: u32) -> Vec<(&'static str, String)> {
    vec![
        ("upstream", up.addr.to_string()),
        ("seats", seats.to_string()),
        ("idle", "20m".into()),
        ("lifetime", "12h".into()),
        ("expired", "login".into()),
        ("seats_per", "session".into()),
        ("sweep", "200ms".into()),
    ]
}

pub fn set(vars: &mut [(&'static str, String)], key: &str, value: &str) {
    for (k, v) in vars.iter_mut() {
        if *k == key {
            *v = value.to_string();
        }
    }
}

/// An app on a raw socket, for what hyper's server cannot send: `POST /login` with the right
/// password is answered `103 Early Hints` first, then the real `302` that sets the session
/// cookie (a request with `Expect: 100-continue` also gets its `100 Continue` before the
/// body is read). Everything else: `200 ok`. Counts requests per path in `seen`.
pub async fn early_hints_upstream(cookie: &str) -> Upstream {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let cookie_name = cookie.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = s2.clone();
            let cookie = cookie_name.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(stream);
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        match conn.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" || line == "\n" {
                            break;
                        }
                        head.push(line.trim_end().to_string());
                    }
                    let Some(first) = head.first().cloned() else {
                        return;
                    };
                    let mut parts = first.split(' ');
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let header = |name: &str| {
                        head.iter().skip(1).find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
                        let _ = conn
                            .get_mut()
                            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                            .await;
                    }
                    let mut body = vec![0u8; len];
                    if conn.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    *seen
                        .by_path
                        .lock()
                        .unwrap()
                        .entry(path.clone())
                        .or_default() += 1;
                    let form: HashMap<String, String> =
                        form_urlencoded::parse(&body).into_owned().collect();
                    let answer = if method == "POST"
                        && path.contains("login")
                        && form.get("password").is_some_and(|p| p == PASSWORD)
                    {
                        let n = seen.sessions.fetch_add(1, Ordering::SeqCst);
                        let sid = format!("h{n}-{:x}", rand::random::<u64>());
                        seen.issued.lock().unwrap().insert(sid.clone());
                        format!(
                            "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n\
                             HTTP/1.1 302 Found\r\nLocation: /home\r\nSet-Cookie: {cookie}={sid}; Path=/; HttpOnly\r\nContent-Length: 0\r\n\r\n"
                        )
                    } else if method == "POST" && path.contains("login") {
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nwrong password"
                            .into()
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
                            .into()
                    };
                    if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        seen,
        cookie: cookie.to_string(),
    }
}

/// Logs in at the app itself, bypassing the gateway (a session the gateway never saw, such as
/// one opened before it was deployed): the session cookie value the app issued.
pub async fn app_login(up: &Upstream, user: &str) -> String {
    let r = client()
        .post(format!("http://{}/login", up.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    set_cookie(&r, &up.cookie).expect("the app logs in")
}

/// `promtool check metrics` on an exposition: fails the test with promtool's complaint.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is required (scripts/setup --test installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
