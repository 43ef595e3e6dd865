//! Issue 16: TLS and HTTP/2 on the listener, certificate reload, upstream TLS, the access log.
//!
//! Certificates are made per test with the `openssl` command line (a throwaway CA and leaf
//! certificates for `localhost` / 127.0.0.1). HTTP/2 and HTTP/1.1 over TLS go through `curl`
//! (run with tokio's process API: the fake app lives on the test's runtime); the open
//! connection across a reload is a raw tokio-rustls stream.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A throwaway CA in `dir` that issues leaf certificates.
pub struct Pki {
    dir: PathBuf,
    name: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA called `name`: `{name}-ca.crt` / `{name}-ca.key` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-keyout",
                &format!("{name}-ca.key"),
                "-out",
                &format!("{name}-ca.crt"),
            ],
        );
        Pki {
            dir: dir.to_owned(),
            name: name.to_string(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A leaf certificate `{leaf}.crt` / `{leaf}.key` for `dns` and 127.0.0.1.
    pub fn issue(&self, leaf: &str, dns: &str) -> (PathBuf, PathBuf) {
        let ext = format!("{leaf}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName=DNS:{dns},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={leaf}"),
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
            ],
        );
        let serial = format!("0x{:016x}", rand::random::<u64>() >> 1);
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                &format!("{}-ca.crt", self.name),
                "-CAkey",
                &format!("{}-ca.key", self.name),
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &format!("{leaf}.crt"),
            ],
        );
        (
            self.dir.join(format!("{leaf}.crt")),
            self.dir.join(format!("{leaf}.key")),
        )
    }
}

fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A rustls client that trusts only `ca`.
pub fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection to `addr` as `localhost`; also answers the certificate it was shown.
async fn tls_connect(
    ca: &Path,
    addr: SocketAddr,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = connector(ca)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let shown = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (s, shown)
}

/// One request on an open keep-alive connection; returns the status.
async fn keepalive_get<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("response within 10s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

pub struct Answer {
    pub status: u16,
    pub version: String,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let pair = v.trim().split(';').next()?;
            let (n, val) = pair.split_once('=')?;
            (n == name && !val.is_empty()).then(|| val.to_string())
        })
    }
}

/// curl against `https://localhost:{port}{path}` trusting `ca`; `args` add e.g. `--http2`.
pub async fn curl(ca: &Path, port: u16, path: &str, args: &[&str]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1"), "-D"])
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .await
        .expect("curl is needed for the TLS tests");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {path} {args:?}: {w} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, version) = w.split_once(' ').unwrap();
    Answer {
        status: status.parse().unwrap(),
        version: version.to_string(),
        headers: std::fs::read_to_string(h).unwrap_or_default(),
        body: std::fs::read_to_string(b).unwrap_or_default(),
    }
}

const TLS_CFG: &str = r#"
listen:
  - address: "{listen}"
    tls: { cert: "{dir}/gw.crt", key: "{dir}/gw.key" }
  - { address: "127.0.0.1:{plain_port}", redirect_https: true }
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
store:
  kind: embedded
  path: "{dir}/seats.redb"
audit:
  path: "{dir}/audit.jsonl"
access_log:
  path: "{dir}/access.log"
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
      presence_timeout: 90s
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats: 1
"#;

/// A gateway on TLS (certificate `gw` from a fresh CA) plus a redirecting plain listener.
async fn tls_gateway(up: &Upstream) -> (Gateway, Pki, u16) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let pki = Pki::new(dir.path(), "gw");
    pki.issue("gw", "localhost");
    let plain_socket = bound();
    let plain = plain_socket.local_addr().unwrap().port();
    let vars = [
        ("upstream", up.addr.to_string()),
        ("plain_port", plain.to_string()),
    ];
    let g = Gateway::start_in(dir, TLS_CFG, &vars, vec![plain_socket]).await;
    (g, pki, plain)
}

fn access_lines(g: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(g.dir.path().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn https_h2_and_h1_login_session_denial_and_access_log() {
    let up = upstream("SID").await;
    let (g, pki, plain) = tls_gateway(&up).await;
    let port = g.listen.port();
    let ca = pki.ca();
    let form = ["-d", "username=ann&password=pw"];

    // HTTP/2: login takes the one seat; the session goes on with its cookie split over two
    // `cookie` header fields, as HTTP/2 clients send them.
    let ann = curl(&ca, port, "/login", &[&["--http2"][..], &form].concat()).await;
    assert_eq!(
        (ann.status, ann.version.as_str()),
        (302, "2"),
        "{}",
        ann.headers
    );
    let sid = ann.set_cookie("SID").expect("session cookie over h2");
    let jar = [
        "--http2",
        "-H",
        "cookie: theme=dark",
        "-H",
        &format!("cookie: SID={sid}"),
    ];
    let page = curl(&ca, port, "/home", &jar).await;
    assert_eq!(
        (page.status, page.version.as_str()),
        (200, "2"),
        "{}",
        page.body
    );
    assert_eq!(up.seen.count("/home"), 1);
    assert_eq!(g.in_use("crm").await, 1);
    // A seat holder's page gets the heartbeat script over HTTP/2 too (no Content-Length).
    let html = curl(&ca, port, "/page", &jar).await;
    assert_eq!((html.status, html.version.as_str()), (200, "2"));
    assert!(html.body.contains("/.seatgate/heartbeat"), "{}", html.body);
    assert!(html.body.ends_with("</html>"), "{}", html.body);
    let beat = curl(
        &ca,
        port,
        "/.seatgate/heartbeat",
        &[&jar[..], &["-X", "POST"]].concat(),
    )
    .await;
    assert_eq!(beat.status, 204);

    // HTTP/1.1 over TLS: a second user is refused and the app never sees the login.
    let logins = up.seen.count("/login");
    let bob = curl(
        &ca,
        port,
        "/login",
        &["--http1.1", "-d", "username=bob&password=pw"],
    )
    .await;
    assert_eq!(
        (bob.status, bob.version.as_str()),
        (503, "1.1"),
        "{}",
        bob.body
    );
    assert!(bob.body.contains("All licenses are in use"), "{}", bob.body);
    assert_eq!(up.seen.count("/login"), logins);
    let again = curl(
        &ca,
        port,
        "/home",
        &["--http1.1", "-b", &format!("SID={sid}")],
    )
    .await;
    assert_eq!(again.status, 200);

    // Plain HTTP (or any garbage) on the TLS port fails its handshake: logged, the
    // connection closed, nothing else disturbed.
    let mut raw = TcpStream::connect(g.listen).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the gateway kept a failed handshake open");
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = g.log();
            async move { log.contains("handshake error") }
        })
        .await,
        "{}",
        g.log()
    );
    assert!(
        g.metric("seatgate_tls_handshake_failures_total").await >= 1.0,
        "failed handshake not counted"
    );
    assert_eq!(curl(&ca, port, "/home", &jar).await.status, 200);

    // The plain listener sends browsers to the TLS one, method and path kept.
    let r = client()
        .post(format!("http://127.0.0.1:{plain}/login?next=/a"))
        .header("host", format!("localhost:{plain}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{port}/login?next=/a").as_str()
    );

    // Access log: one JSON line per request, UTC time, never a cookie value or password.
    let mut lines = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            lines = access_lines(&g);
            // Written by a background thread: wait for every line this test asserts on.
            let homes = lines.iter().filter(|l| l["path"] == "/home").count();
            let n = lines.len();
            async move { n >= 6 && homes >= 3 }
        })
        .await,
        "access log: {lines:?}\n{}",
        g.log()
    );
    let text = std::fs::read_to_string(g.dir.path().join("access.log")).unwrap();
    assert!(!text.contains(&sid), "{text}");
    assert!(
        !text.contains("password") && !text.contains("pw\""),
        "{text}"
    );
    let login = lines
        .iter()
        .find(|l| l["action"] == "login" && l["user"] == "ann")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(login["status"], 302);
    assert_eq!(login["http"], "2");
    assert_eq!(login["tls"], true);
    assert_eq!(login["product"], "crm");
    assert_eq!(login["seat"].as_str().map(str::len), Some(12), "{login}");
    assert!(login["time"].as_str().unwrap().ends_with('Z'));
    let denied = lines
        .iter()
        .find(|l| l["action"] == "login" && l["status"] == 503)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(denied["user"], "bob");
    assert_eq!(denied["denied"], "full");
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "heartbeat" && l["status"] == 204),
        "{text}"
    );
    let home: Vec<_> = lines.iter().filter(|l| l["path"] == "/home").collect();
    assert_eq!(home.len(), 3, "{text}");
    // The same session, the same hash.
    assert_eq!(home[0]["seat"], login["seat"]);
    assert!(home[0]["bytes"].as_u64().unwrap() > 0);
    assert!(home[0]["duration_ms"].as_f64().is_some());

    // The other way round: a denial over HTTP/2, a logout and a login over HTTP/1.1.
    let cat = curl(
        &ca,
        port,
        "/login",
        &["--http2", "-d", "username=cat&password=pw"],
    )
    .await;
    assert_eq!(
        (cat.status, cat.version.as_str()),
        (503, "2"),
        "{}",
        cat.body
    );
    let out = curl(
        &ca,
        port,
        "/logout",
        &["--http1.1", "-b", &format!("SID={sid}")],
    )
    .await;
    assert_eq!(out.status, 302);
    assert_eq!(g.in_use("crm").await, 0);
    let dan = curl(
        &ca,
        port,
        "/login",
        &["--http1.1", "-d", "username=dan&password=pw"],
    )
    .await;
    assert_eq!(
        (dan.status, dan.version.as_str()),
        (302, "1.1"),
        "{}",
        dan.body
    );
    assert!(dan.set_cookie("SID").is_some(), "{}", dan.headers);
    assert_eq!(g.in_use("crm").await, 1);
}

#[tokio::test]
async fn certificate_swap_reloads_while_a_connection_stays_open() {
    let up = upstream("SID").await;
    let (g, pki, _) = tls_gateway(&up).await;
    let (a, b) = (der(&g.dir.path().join("gw.crt")), {
        pki.issue("gw2", "localhost");
        der(&g.dir.path().join("gw2.crt"))
    });
    let (mut open, shown) = tls_connect(&pki.ca(), g.listen).await;
    assert_eq!(shown, a);
    assert_eq!(keepalive_get(&mut open, "/before").await, 200);

    // Swap the files in place (as cert-manager or certbot do) and reload.
    for ext in ["crt", "key"] {
        let dir = g.dir.path();
        std::fs::copy(
            dir.join(format!("gw2.{ext}")),
            dir.join(format!("gw.{ext}")),
        )
        .unwrap();
    }
    let pid = g.child.as_ref().unwrap().id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(hup.unwrap().success());
    let ca = pki.ca();
    let swapped = eventually(Duration::from_secs(10), || {
        let (ca, b, addr) = (ca.clone(), b.clone(), g.listen);
        async move { tls_connect(&ca, addr).await.1 == b }
    })
    .await;
    assert!(
        swapped,
        "new handshakes never got the new certificate: {}",
        g.log()
    );

    // The connection opened before the reload is still served, on its old session.
    assert_eq!(keepalive_get(&mut open, "/after").await, 200);
    assert_eq!(open.get_ref().1.peer_certificates().unwrap()[0].to_vec(), a);
    assert_eq!(up.seen.count("/after"), 1);

    // A broken certificate on reload is refused; the good one stays.
    std::fs::write(g.dir.path().join("gw.crt"), "not a certificate").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(hup.unwrap().success());
    let audit = g.dir.path().join("audit.jsonl");
    let refused = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        async move { text.contains("config_reload_refused") }
    })
    .await;
    assert!(refused, "{}", g.log());
    assert!(g.log().contains("listen[0].tls.cert"), "{}", g.log());
    assert_eq!(tls_connect(&pki.ca(), g.listen).await.1, b);
}

/// A TLS app for `app.test` with a certificate from its own CA: answers the path it got and
/// sets the session cookie on `/login`.
async fn tls_upstream(dir: &Path) -> (SocketAddr, Pki) {
    let pki = Pki::new(dir, "app");
    let (crt, key) = pki.issue("app", "app.test");
    let certs: Vec<_> = CertificateDer::pem_file_iter(&crt)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let _ = req.into_body().collect().await;
                    let mut r = hyper::Response::builder().status(200);
                    if path == "/login" {
                        r = r.header("set-cookie", "SID=tls-session; Path=/");
                    }
                    r.body(Full::new(Bytes::from(format!("tls app: {path}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, pki)
}

const UPSTREAM_TLS_CFG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users: [{ name: admin, password_hash: "{admin_hash}", role: super }]
store: { kind: embedded, path: "{dir}/seats.redb" }
access_log: { path: "{dir}/access.log" }
products:
  - name: crm
    upstream: { address: "{app}", tls: true, sni: app.test, ca: "{dir}/app-ca.crt" }
    path_prefix: /
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, method: POST, user: { form_field: username } }
    seats: 2
  - name: wrongca
    upstream: { address: "{app}", tls: true, sni: app.test, ca: "{dir}/other-ca.crt" }
    path_prefix: /wrong
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /wrong/login, method: POST, user: { form_field: username } }
    seats: 2
"#;

#[tokio::test]
async fn upstream_tls_is_verified_against_its_own_ca() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (app, _pki) = tls_upstream(dir.path()).await;
    Pki::new(dir.path(), "other");
    let vars = [("app", app.to_string())];
    let g = Gateway::start_in(dir, UPSTREAM_TLS_CFG, &vars, Vec::new()).await;

    let r = login(&g, "ann", "pw", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(set_cookie(&r, "SID").as_deref(), Some("tls-session"));
    assert_eq!(g.in_use("crm").await, 1);
    let r = g.get_with_sid("/home", "tls-session").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls app: /home");

    // An app whose certificate the configured CA did not sign is never talked to.
    let r = client().get(g.url("/wrong/x")).send().await.unwrap();
    assert_eq!(r.status(), 502, "{}", g.log());
    // The access log shows the 502 the client got.
    let logged = eventually(Duration::from_secs(5), || {
        let lines = access_lines(&g);
        async move {
            lines
                .iter()
                .any(|l| l["path"] == "/wrong/x" && l["status"] == 502 && l["product"] == "wrongca")
        }
    })
    .await;
    assert!(logged, "{:?}", access_lines(&g));
}

fn check_config(yaml: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn tls_config_errors_name_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d, "t");
    pki.issue("one", "localhost");
    pki.issue("two", "localhost");
    let base = |listen: &str, upstream: &str| {
        format!(
            "listen:\n{listen}\nadmin: {{ listen: 127.0.0.1:9090 }}\nstore: {{ kind: embedded }}\n\
             products:\n  - name: crm\n    upstream: {upstream}\n    session: {{ cookie: SID, \
             idle_timeout: 20m, max_lifetime: 12h }}\n    login: {{ path: /login }}\n    seats: 1\n"
        )
    };
    let d = d.display();
    let tls = |cert: &str, key: &str| {
        format!("  - \"127.0.0.1:8080\"\n  - address: 127.0.0.1:8443\n    tls:\n      cert: {d}/{cert}\n      key: {d}/{key}")
    };
    let cases: Vec<(String, &[&str])> = vec![
        (base(&tls("one.crt", "one.key"), "app:80"), &[]),
        (
            base(&tls("missing.crt", "one.key"), "app:80"),
            &["listen[1].tls.cert (line 5)", "cannot read", "missing.crt"],
        ),
        (
            base(&tls("one.crt", "two.key"), "app:80"),
            &[
                "listen[1].tls.key (line 6)",
                "does not match the certificate",
            ],
        ),
        (
            base(&tls("one.key", "one.key"), "app:80"),
            &["listen[1].tls.cert", "no PEM certificate"],
        ),
        (
            base(
                "  - 127.0.0.1:8080",
                "{ address: \"10.0.0.5:443\", tls: true }",
            ),
            &[
                "products[0].upstream.sni (line 7)",
                "10.0.0.5",
                "needs `sni`",
            ],
        ),
        (
            base(
                "  - 127.0.0.1:8080",
                &format!("{{ address: app:443, tls: true, ca: {d}/nope.pem }}"),
            ),
            &["products[0].upstream.ca", "cannot read"],
        ),
        (
            base("  - 127.0.0.1:8080", "{ address: app:80, sni: app }"),
            &["products[0].upstream.sni", "only used with `tls: true`"],
        ),
        (
            base(
                "  - { address: 127.0.0.1:8080, redirect_https: true }",
                "app:80",
            ),
            &["listen.redirect_https", "needs a TLS listener"],
        ),
        (
            base(
                "  - { address: 127.0.0.1:8080, tls: { cert: a } }",
                "app:80",
            ),
            &["missing field `key`", "line 2"],
        ),
        (
            base("  - { address: 127.0.0.1:8080, tsl: true }", "app:80"),
            &["unknown field `tsl`", "line 2"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in cases {
        let (ok, text) = check_config(&yaml, dir.path());
        assert_eq!(ok, want.is_empty(), "{yaml}\n→ {text}");
        for w in want {
            assert!(text.contains(w), "{yaml}\n→ {text}\nwanted: {w}");
        }
    }
}

/// `admin.tls`: the admin listener speaks HTTPS with its own certificate. Started by hand:
/// the harness waits on plain-HTTP `/healthz`.
#[tokio::test]
async fn admin_listener_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "adm");
    let (crt, key) = pki.issue("adm", "localhost");
    let (proxy_socket, admin_socket) = (bound(), bound());
    let admin = admin_socket.local_addr().unwrap().port();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin:\n  listen: 127.0.0.1:{admin}\n  tls: {{ cert: {}, key: {} }}\n  \
         users: [{{ name: admin, password_hash: \"{ADMIN_HASH}\", role: super }}]\n\
         store: {{ kind: embedded, path: {}/s.redb }}\nproducts:\n  - name: crm\n    upstream: \
         127.0.0.1:9\n    session: {{ cookie: SID, idle_timeout: 20m, max_lifetime: 12h }}\n    \
         login: {{ path: /login }}\n    seats: 1\n",
        proxy_socket.local_addr().unwrap().port(),
        crt.display(),
        key.display(),
        dir.path().display()
    );
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_seatgate"));
    cmd.args(["run", "--config"]).arg(&cfg);
    pass_sockets(cmd.as_std_mut(), &[&proxy_socket, &admin_socket]);
    let mut child = cmd.stderr(log).kill_on_drop(true).spawn().unwrap();
    let ca = pki.ca();
    let up = eventually(Duration::from_secs(20), || {
        let ca = ca.clone();
        async move {
            tokio::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--cacert"])
                .arg(&ca)
                .args(["--resolve", &format!("localhost:{admin}:127.0.0.1")])
                .arg(format!("https://localhost:{admin}/healthz"))
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
    })
    .await;
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(up, "admin never answered over TLS: {text}");
    let m = curl(&ca, admin, "/metrics", &["--http2"]).await;
    assert_eq!((m.status, m.version.as_str()), (200, "2"));
    assert!(m.body.contains("seatgate_seats_capacity"));
    // Over TLS the page's session cookie is never to be sent in clear.
    let login = curl(
        &ca,
        admin,
        "/login",
        &["--data", "username=admin&password=secret"],
    )
    .await;
    assert_eq!(login.status, 303, "{}", login.headers);
    let set = login
        .headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: seatgate_admin=")
        })
        .unwrap_or_else(|| panic!("no page cookie: {}", login.headers));
    assert!(set.contains("; Secure"), "{set}");
    let _ = child.kill().await;
}
