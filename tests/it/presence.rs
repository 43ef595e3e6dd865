//! Issue 6: presence. The heartbeat script in real pages (plain, gzip, br, deflate, chunked,
//! CSP), heartbeats and their bad input, seats freed when heartbeats stop (embedded and
//! Redis), and a real headless Chromium that is killed while another stays open and idle.

use crate::browser::Browser;
use crate::harness::*;
use crate::redis::{redis_url, Prefix};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CONFIG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
store:
STORE
audit:
  path: "{dir}/audit.jsonl"
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: {idle}
      max_lifetime: 12h
      presence_timeout: {presence}
      expired: login
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats_per: session
    seats: 5
"#;

const EMBEDDED: &str = r#"  kind: embedded
  path: "{dir}/seats.redb"
  sweep_interval: 200ms
  flush_interval: 200ms"#;

async fn start(upstream: SocketAddr, presence: &str, idle: &str) -> Gateway {
    let vars = vec![
        ("upstream", upstream.to_string()),
        ("presence", presence.to_string()),
        ("idle", idle.to_string()),
    ];
    Gateway::start(&CONFIG.replace("STORE", EMBEDDED), &vars).await
}

async fn sid(g: &Gateway, user: &str) -> String {
    let r = login(g, user, PASSWORD, None).await;
    assert_eq!(r.status(), 302, "login {user}");
    set_cookie(&r, "SID").expect("session cookie")
}

async fn get(g: &Gateway, path: &str, sid: Option<&str>) -> reqwest::Response {
    let mut req = client().get(g.url(path));
    if let Some(s) = sid {
        req = req.header("cookie", format!("SID={s}"));
    }
    req.send().await.unwrap()
}

async fn beat(g: &Gateway, sid: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = client().post(g.url(&format!("/.seatgate/heartbeat{query}")));
    if let Some(s) = sid {
        req = req.header("cookie", format!("SID={s}"));
    }
    req.send().await.unwrap()
}

async fn session_of(g: &Gateway, user: &str) -> Option<Value> {
    g.sessions().await.into_iter().find(|s| s["user"] == user)
}

const SCRIPT_OPEN: &str = "<script data-seatgate";

// ------------------------------------------------------------------ a raw-socket app

const PAGE: &str = "<!doctype html><html><head><title>t</title></head><body><h1>Accounts</h1>\
    <p>some text to compress, some text to compress, some text to compress</p></body></html>\n";

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn brotli_enc(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(b).unwrap();
    }
    out
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// What the raw app sends for a path: headers, body parts, and whether to frame them as
/// chunks (each part its own chunk, written apart) or with Content-Length.
type Reply = (Vec<(&'static str, String)>, Vec<Vec<u8>>, bool);

fn route(path: &str) -> Reply {
    let html = ("content-type", "text/html; charset=utf-8".to_string());
    let split3 = |b: Vec<u8>| -> Vec<Vec<u8>> {
        let n = b.len() / 3;
        vec![b[..n].to_vec(), b[n..2 * n].to_vec(), b[2 * n..].to_vec()]
    };
    match path {
        "/gz" => (
            vec![html, ("content-encoding", "gzip".into())],
            vec![gzip(PAGE.as_bytes())],
            false,
        ),
        "/gz-chunked" => (
            vec![html, ("content-encoding", "gzip".into())],
            split3(gzip(PAGE.as_bytes())),
            true,
        ),
        "/br" => (
            vec![html, ("content-encoding", "br".into())],
            split3(brotli_enc(PAGE.as_bytes())),
            true,
        ),
        "/deflate" => (
            vec![html, ("content-encoding", "deflate".into())],
            vec![zlib(PAGE.as_bytes())],
            false,
        ),
        "/no-body-end" => (
            vec![html],
            split3(b"<html><p>a fragment-like page that never closes its body".to_vec()),
            true,
        ),
        "/csp" => (
            vec![
                html,
                ("content-security-policy", "default-src 'self'".into()),
                ("etag", "\"v7\"".into()),
            ],
            vec![PAGE.as_bytes().to_vec()],
            false,
        ),
        "/csp-nonce" => (
            vec![
                html,
                (
                    "content-security-policy",
                    "script-src 'nonce-Zm9vYmFy' 'strict-dynamic'".into(),
                ),
            ],
            vec![PAGE.as_bytes().to_vec()],
            false,
        ),
        "/no-transform" => (
            vec![html, ("cache-control", "no-transform".into())],
            vec![PAGE.as_bytes().to_vec()],
            false,
        ),
        _ => (
            vec![("content-type", "application/json".into())],
            vec![b"{\"ok\":true}".to_vec()],
            false,
        ),
    }
}

/// An app written against raw sockets, so framing and coding are exactly what the test says.
async fn raw_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            n += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let head_end = loop {
                    let Ok(k) = sock.read(&mut tmp).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..k]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let len: usize = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&tmp[..k]),
                    }
                }
                if method == "POST" && path == "/login" {
                    let r = format!(
                        "HTTP/1.1 302 Found\r\nlocation: /home\r\nset-cookie: SID=raw{n}-{:x}; Path=/; HttpOnly\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        rand::random::<u32>()
                    );
                    let _ = sock.write_all(r.as_bytes()).await;
                    return;
                }
                let (headers, parts, chunked) = route(&path);
                let mut out = String::from("HTTP/1.1 200 OK\r\nconnection: close\r\n");
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                if chunked {
                    out.push_str("transfer-encoding: chunked\r\n\r\n");
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    for p in parts {
                        let mut c = format!("{:x}\r\n", p.len()).into_bytes();
                        c.extend_from_slice(&p);
                        c.extend_from_slice(b"\r\n");
                        if sock.write_all(&c).await.is_err() {
                            return;
                        }
                        let _ = sock.flush().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = sock.write_all(b"0\r\n\r\n").await;
                } else {
                    let body: Vec<u8> = parts.concat();
                    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                    let mut all = out.into_bytes();
                    all.extend_from_slice(&body);
                    let _ = sock.write_all(&all).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

fn decode(coding: Option<&str>, body: &[u8]) -> String {
    let mut out = Vec::new();
    match coding {
        None => out = body.to_vec(),
        Some("gzip") => {
            flate2::read::MultiGzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
    String::from_utf8(out).unwrap()
}

/// Fetches `path` as a seat holder; returns headers and the decoded page.
async fn page(g: &Gateway, path: &str, sid: &str) -> (reqwest::header::HeaderMap, String) {
    let r = get(g, path, Some(sid)).await;
    assert_eq!(r.status(), 200, "{path}");
    let h = r.headers().clone();
    let coding = h
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.bytes().await.unwrap();
    (h, decode(coding.as_deref(), &body))
}

fn script_before_body_end(page: &str) -> bool {
    let s = page.find(SCRIPT_OPEN);
    let e = page.rfind("</body>");
    matches!((s, e), (Some(s), Some(e)) if s < e && page[s..e].ends_with("</script>"))
}

#[tokio::test]
async fn presence_script_goes_into_seat_holders_pages_only() {
    let up = upstream("SID").await;
    let g = start(up.addr, "3s", "20m").await;
    // No session: the page is the app's, byte for byte.
    let r = get(&g, "/page", None).await;
    assert!(r.headers().get("content-length").is_some());
    let anon = r.text().await.unwrap();
    assert!(!anon.contains(SCRIPT_OPEN), "{anon}");

    let s = sid(&g, "ann").await;
    let (h, body) = page(&g, "/page", &s).await;
    assert!(script_before_body_end(&body), "{body}");
    assert!(
        body.contains("p=1000"),
        "beats every presence_timeout/3: {body}"
    );
    assert!(body.starts_with("<html><head><title>t</title></head><body><p>hello</p>"));
    assert!(h.get("content-length").is_none(), "{h:?}");
    assert_eq!(h["transfer-encoding"], "chunked");
    // Non-HTML answers go through untouched.
    let r = get(&g, "/api/data", Some(&s)).await;
    assert!(r.headers().get("content-length").is_some());
    assert!(!r.text().await.unwrap().contains(SCRIPT_OPEN));
    // A fragment fetched by the page's own scripts is not a page.
    let r = client()
        .get(g.url("/page"))
        .header("cookie", format!("SID={s}"))
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains(SCRIPT_OPEN));

    // A product without presence injects nothing.
    let g0 = start(up.addr, "0s", "20m").await;
    let s0 = sid(&g0, "bob").await;
    let (h, body) = page(&g0, "/page", &s0).await;
    assert!(!body.contains(SCRIPT_OPEN), "{body}");
    assert!(h.get("content-length").is_some());
}

#[tokio::test]
async fn presence_injection_through_compressed_chunked_and_csp_pages() {
    let app = raw_app().await;
    let g = start(app, "3s", "20m").await;
    let s = sid(&g, "ann").await;
    for (path, coding) in [
        ("/gz", Some("gzip")),
        ("/gz-chunked", Some("gzip")),
        ("/br", Some("br")),
        ("/deflate", Some("deflate")),
    ] {
        let (h, body) = page(&g, path, &s).await;
        assert_eq!(
            h.get("content-encoding").map(|v| v.to_str().unwrap()),
            coding,
            "{path} keeps its coding"
        );
        assert!(h.get("content-length").is_none(), "{path}: {h:?}");
        assert!(script_before_body_end(&body), "{path}: {body}");
        let without: String = {
            let s = body.find(SCRIPT_OPEN).unwrap();
            let e = s + body[s..].find("</script>").unwrap() + "</script>".len();
            format!("{}{}", &body[..s], &body[e..])
        };
        assert_eq!(
            without, PAGE,
            "{path}: the app's page is otherwise unchanged"
        );
    }

    let (_, body) = page(&g, "/no-body-end", &s).await;
    assert!(
        body.starts_with(
            "<html><p>a fragment-like page that never closes its body<script data-seatgate"
        ),
        "{body}"
    );
    assert!(body.ends_with("</script>"), "{body}");

    // CSP without a nonce: the script's hash is allowed for scripts only.
    let (h, body) = page(&g, "/csp", &s).await;
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self' 'sha256-"),
        "{csp}"
    );
    assert_eq!(h["etag"], "W/\"v7\"");
    // The hash really is the script's.
    let script = {
        let s = body.find(SCRIPT_OPEN).unwrap();
        let open_end = s + body[s..].find('>').unwrap() + 1;
        let close = open_end + body[open_end..].find("</script>").unwrap();
        body[open_end..close].to_string()
    };
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&script));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "{csp} vs {hash}");

    // CSP with a nonce: the page's nonce is lent to the tag and the header is unchanged.
    let (h, body) = page(&g, "/csp-nonce", &s).await;
    assert_eq!(
        h["content-security-policy"],
        "script-src 'nonce-Zm9vYmFy' 'strict-dynamic'"
    );
    assert!(
        body.contains("<script data-seatgate nonce=\"Zm9vYmFy\">"),
        "{body}"
    );

    // `no-transform` is honoured.
    let (_, body) = page(&g, "/no-transform", &s).await;
    assert_eq!(body, PAGE);
}

#[tokio::test]
async fn presence_heartbeat_bad_input_and_flood() {
    let up = upstream("SID").await;
    let g = start(up.addr, "3s", "20m").await;
    // No cookie, unknown cookie, junk cookie: 410, and the app never sees heartbeats.
    assert_eq!(beat(&g, None, "").await.status(), 410);
    assert_eq!(beat(&g, Some("never-issued"), "").await.status(), 410);
    assert_eq!(beat(&g, Some("%%%;;=="), "").await.status(), 410);
    assert!(g.sessions().await.is_empty());

    let s = sid(&g, "ann").await;
    let before = session_of(&g, "ann").await.unwrap();
    assert!(before["last_heartbeat"].is_null());
    let r = beat(&g, Some(&s), "").await;
    assert_eq!(r.status(), 204);
    let first = session_of(&g, "ann").await.unwrap();
    assert!(first["last_heartbeat"].is_string(), "{first}");
    // Once presence applies, the session expires with it (3s), not at idle (20m); both are
    // RFC 3339 UTC with the same layout, so they compare as strings.
    let (idle_at, presence_at) = (
        before["expires_at"].as_str().unwrap(),
        first["expires_at"].as_str().unwrap(),
    );
    assert!(presence_at < idle_at, "{presence_at} vs {idle_at}");
    // The pagehide hint is answered but does not extend presence. Time that must pass: the
    // hint comes on a later millisecond, so had it counted, last_heartbeat would differ.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(beat(&g, Some(&s), "?hint=hide").await.status(), 204);
    assert_eq!(
        session_of(&g, "ann").await.unwrap()["last_heartbeat"],
        first["last_heartbeat"]
    );

    // A flood from one session is cut off with 429 + Retry-After; another session is not.
    let other = sid(&g, "bob").await;
    // Sent together so they land in one or two limit windows (1s each, 20 beats per window).
    let flood: Vec<_> = (0..60)
        .map(|_| {
            let url = g.url("/.seatgate/heartbeat");
            let cookie = format!("SID={s}");
            tokio::spawn(async move {
                let r = client()
                    .post(url)
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            })
        })
        .collect();
    let mut limited = 0;
    for t in flood {
        match t.await.unwrap() {
            (204, _) => {}
            (429, has_retry_after) => {
                limited += 1;
                assert!(has_retry_after);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited >= 10, "only {limited} of 60 limited");
    assert_eq!(beat(&g, Some(&other), "").await.status(), 204);
    let m = g.metrics().await;
    assert!(
        m.contains(r#"seatgate_heartbeats_total{product="crm",result="limited"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seatgate_heartbeats_total{product="crm",result="hide"} 1"#),
        "{m}"
    );

    // Ended session: 410 and nothing changes.
    let r = g.get_with_sid("/logout", &other).await;
    assert_eq!(r.status(), 302);
    assert_eq!(beat(&g, Some(&other), "").await.status(), 410);
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(up.seen.count("/.seatgate/heartbeat"), 0);
}

/// A beats once then stops: freed by presence. B never beats: presence does not apply. C
/// beats all along: heartbeats are not activity, so C still ends at idle timeout.
async fn presence_stops_and_idle_rules(g: &Gateway) {
    let t0 = Instant::now();
    let a = sid(g, "ann").await;
    let _b = sid(g, "bob").await;
    let c = sid(g, "cat").await;
    assert_eq!(beat(g, Some(&a), "").await.status(), 204);
    let beating = {
        let url = g.url("/.seatgate/heartbeat");
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                let _ = client()
                    .post(&url)
                    .header("cookie", format!("SID={c}"))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // A span in which nothing may happen: ann's page stopped beating, but presence_timeout
    // has not passed yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        session_of(g, "ann").await.is_some(),
        "not before presence_timeout"
    );
    assert!(
        eventually(Duration::from_secs(6), || async {
            session_of(g, "ann").await.is_none()
        })
        .await,
        "ann's seat was not freed by presence"
    );
    let freed = t0.elapsed();
    assert!(
        freed >= Duration::from_millis(2900),
        "freed too early: {freed:?}"
    );
    assert!(
        session_of(g, "bob").await.is_some(),
        "no heartbeat, no presence"
    );
    assert!(session_of(g, "cat").await.is_some());
    // Expired seats stop counting at once; the sweep then releases (and counts) them.
    assert!(released(g, "presence", 1).await);
    // Idle (5s) ends bob and cat alike, though cat kept beating.
    assert!(
        eventually(Duration::from_secs(8), || async {
            g.sessions().await.is_empty()
        })
        .await,
        "idle did not end the others"
    );
    beating.abort();
    assert!(released(g, "idle", 2).await);
    assert!(released(g, "presence", 1).await);
}

/// Waits (briefly) until `seatgate_seat_releases_total{reason}` reads `n`.
async fn released(g: &Gateway, reason: &str, n: u64) -> bool {
    let ok = eventually(Duration::from_secs(3), || async {
        g.releases(reason).await == n as f64
    })
    .await;
    if !ok {
        eprintln!("{reason} releases = {}, want {n}", g.releases(reason).await);
    }
    ok
}

#[tokio::test]
async fn presence_frees_seat_when_heartbeats_stop() {
    let up = upstream("SID").await;
    let g = start(up.addr, "3s", "5s").await;
    presence_stops_and_idle_rules(&g).await;
    // The audit log is written by its own thread: wait for the release line.
    let path = g.dir.path().join("audit.jsonl");
    let mut audit = String::new();
    eventually(Duration::from_secs(5), || {
        audit = std::fs::read_to_string(&path).unwrap_or_default();
        let done = audit.contains("\"reason\":\"presence\"");
        async move { done }
    })
    .await;
    let presence: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"release\"") && l.contains("\"reason\":\"presence\""))
        .collect();
    assert_eq!(presence.len(), 1, "{audit}");
    assert!(presence[0].contains("\"ann\""), "{audit}");
}

#[tokio::test]
async fn presence_frees_seat_when_heartbeats_stop_redis() {
    let up = upstream("SID").await;
    let url = redis_url();
    let prefix = Prefix::on(&url);
    let store = format!(
        "  kind: redis\n  redis: {{ url: \"{url}\", prefix: \"{}\" }}\n  sweep_interval: 200ms\n  flush_interval: 200ms",
        prefix.name
    );
    let vars = vec![
        ("upstream", up.addr.to_string()),
        ("presence", "3s".to_string()),
        ("idle", "5s".to_string()),
    ];
    let g = Gateway::start(&CONFIG.replace("STORE", &store), &vars).await;
    presence_stops_and_idle_rules(&g).await;
}

// ------------------------------------------------------------------ real browsers

/// Logs in through the gateway from the browser (a real form POST), then opens an app page.
async fn browse_logged_in(b: &Browser, g: &Gateway, user: &str) {
    b.goto(&g.url("/page")).await;
    b.execute(
        "var f=document.createElement('form');f.method='POST';f.action='/login';\
         for (var k of ['username','password']) {var i=document.createElement('input');\
         i.name=k;i.value=arguments[k=='username'?0:1];f.appendChild(i);}\
         document.body.appendChild(f);f.submit();",
        vec![user.into(), PASSWORD.into()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.current_url().await.ends_with("/home") {
        assert!(Instant::now() < deadline, "login did not redirect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.goto(&g.url("/page")).await;
}

#[tokio::test]
async fn browser_presence_killed_browser_frees_seat_idle_one_keeps_it() {
    let up = upstream("SID").await;
    let g = start(up.addr, "3s", "20m").await;
    let (closing, idle) = tokio::join!(Browser::start(), Browser::start());
    browse_logged_in(&closing, &g, "ann").await;
    browse_logged_in(&idle, &g, "bob").await;
    // Both pages run the injected script: their heartbeats reach the ledger.
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = g.sessions().await;
            s.len() == 2 && s.iter().all(|x| x["last_heartbeat"].is_string())
        })
        .await,
        "no heartbeats from the browsers: {:?}",
        g.sessions().await
    );
    let pages_before = up.seen.count("/page");

    closing.kill();
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(8), || async {
            session_of(&g, "ann").await.is_none()
        })
        .await,
        "the killed browser's seat was not freed"
    );
    let took = killed.elapsed();
    // presence_timeout (3s) + one sweep (200ms) + polling and CI slack.
    assert!(took < Duration::from_millis(6500), "took {took:?}");
    // The open, idle browser made no request but kept beating: its seat stays, well past
    // presence_timeout since its last page load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bob = session_of(&g, "bob")
        .await
        .expect("idle browser kept its seat");
    assert!(bob["last_heartbeat"].is_string());
    assert_eq!(
        up.seen.count("/page"),
        pages_before,
        "no page requests meanwhile"
    );
    assert!(released(&g, "presence", 1).await);
    idle.quit().await;
}
