//! Issue 13: hostile HTTP over raw sockets. Each case is sent as bytes a client could send and
//! checked as the client and the app see it: the answer, whether the connection is closed, and
//! whether the app ever saw the request.

use crate::harness::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fresh connection to the gateway's listener.
async fn connect(g: &Gateway) -> TcpStream {
    let addr = g.url("/");
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    TcpStream::connect(addr).await.unwrap()
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it (or 2 s pass
/// with the connection still open). `closed` says which.
async fn raw(g: &Gateway, bytes: &[u8]) -> (String, bool) {
    let mut c = connect(g).await;
    c.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).to_string(), closed)
}

/// `seatgate_bad_requests_total{reason}` as the gateway exports it.
async fn bad_requests(g: &Gateway, reason: &str) -> f64 {
    g.metric(&format!(
        r#"seatgate_bad_requests_total{{reason="{reason}"}}"#
    ))
    .await
}

async fn gateway(seats: u32) -> (Upstream, Gateway) {
    let up = upstream("SID").await;
    let g = Gateway::start(BASIC, &basic_vars(&up, seats)).await;
    (up, g)
}

#[tokio::test]
async fn smuggling_framings_are_refused_and_the_connection_closed() {
    let (up, g) = gateway(2).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "cl+te",
            b"POST /smuggle1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        ),
        (
            "te+cl",
            b"POST /smuggle2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        (
            "conflicting cl",
            b"POST /smuggle3 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "cl list",
            b"POST /smuggle4 HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
        ),
        (
            "chunked, identity",
            b"POST /smuggle5 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /smuggle6 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        ),
        ("bare lf", b"GET /smuggle8 HTTP/1.1\nHost: a\n\n"),
        (
            "absolute-form for another host",
            b"GET http://evil.example/smuggle9 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "te on http/1.0",
            b"POST /smuggle7 HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let (answer, closed) = raw(&g, bytes).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
        assert!(closed, "{name}: connection left open after a 400: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "{name}: a second (smuggled) request was answered: {answer}"
        );
    }
    for p in 1..=9 {
        assert_eq!(
            up.seen.count(&format!("/smuggle{p}")),
            0,
            "/smuggle{p} reached the app"
        );
    }
    assert_eq!(up.seen.count("/SMUGGLED"), 0);
    // The framings the HTTP parser lets through are refused and counted by the gateway; the
    // rest (conflicting lengths, obs-fold, TE lists, TE on 1.0) pingora refuses itself with
    // the same 400, before any hook of ours runs.
    assert_eq!(bad_requests(&g, "length_and_chunked").await, 2.0);
    assert_eq!(bad_requests(&g, "bare_lf").await, 1.0);
}

/// Waits (3 s at most) for `reason="malformed"` to reach `want`; `case` names the request.
async fn malformed_reaches(g: &Gateway, want: f64, case: &str) {
    assert!(
        eventually(Duration::from_secs(3), || async {
            bad_requests(g, "malformed").await == want
        })
        .await,
        "{case}: malformed = {} (want {want})",
        bad_requests(g, "malformed").await
    );
}

/// The heads pingora refuses itself (before any hook of ours) are counted too, as
/// `reason="malformed"`; our own refusals only under their own reason.
#[tokio::test]
async fn heads_pingora_refuses_are_counted_as_malformed() {
    let (up, g) = gateway(2).await;
    assert_eq!(
        bad_requests(&g, "malformed").await,
        0.0,
        "exported from the start"
    );
    let cases: &[(&str, &[u8])] = &[
        (
            "conflicting cl",
            b"POST /m1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "cl list",
            b"POST /m2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
        ),
        (
            "te list",
            b"POST /m3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        ("obs-fold", b"GET /m4 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
        (
            "te on http/1.0",
            b"POST /m5 HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("space in a field name", b"GET /m6 HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"),
        ("not http", b"GARBAGE\r\n\r\n"),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let (answer, closed) = raw(&g, bytes).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
        assert!(closed, "{name}: connection left open after a 400");
        malformed_reaches(&g, (i + 1) as f64, name).await;
    }
    for p in 1..=6 {
        assert_eq!(up.seen.count(&format!("/m{p}")), 0, "/m{p} reached the app");
    }
    // A request of ours refused by our own inspection is counted under its own reason only.
    let (answer, _) = raw(
        &g,
        b"POST /m7 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(bad_requests(&g, "length_and_chunked").await, 1.0);
    assert_eq!(bad_requests(&g, "malformed").await, cases.len() as f64);
    // Refused after a good request on the same kept-alive connection: counted once, and the
    // good request's answer (the app's 200) is not.
    let mut c = connect(&g).await;
    c.write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut c).await;
    assert!(first.contains(" 200 "), "{first}");
    c.write_all(b"GET /m8 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut c).await;
    assert!(second.starts_with("HTTP/1.1 400"), "{second}");
    malformed_reaches(&g, cases.len() as f64 + 1.0, "after a good request").await;
    assert_eq!(up.seen.count("/m8"), 0);
}

#[tokio::test]
async fn oversized_heads_get_414_and_431() {
    let (up, g) = gateway(2).await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(10_000));
    let (answer, closed) = raw(&g, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(closed);
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    let (answer, closed) = raw(&g, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(closed);
    assert_eq!(up.seen.count("/big"), 0);
    assert_eq!(bad_requests(&g, "uri_too_long").await, 1.0);
    assert_eq!(bad_requests(&g, "headers_too_large").await, 1.0);
}

#[tokio::test]
async fn http10_head_and_pipelining_behave_as_a_proxy_should() {
    let (_up, g) = gateway(2).await;
    // HTTP/1.0 without keep-alive: one answer, then the connection closes.
    let (answer, closed) = raw(&g, b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "{answer}"
    );
    assert!(closed, "HTTP/1.0 without keep-alive must close");
    // HTTP/1.0 with keep-alive: the connection stays for a second request.
    let mut c = connect(&g).await;
    c.write_all(b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut c).await;
    assert!(
        first.contains(" 200 ")
            && first
                .to_ascii_lowercase()
                .contains("connection: keep-alive"),
        "{first}"
    );
    c.write_all(b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut c).await;
    assert!(
        second.contains(" 200 ") && second.contains("/b"),
        "{second}"
    );
    // HEAD: headers only.
    let (answer, _) = raw(
        &g,
        b"HEAD /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.contains("<html"),
        "HEAD answered with a body: {answer}"
    );
    // Pipelined: both answered, in order.
    let (answer, _) = raw(
        &g,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (a, b) = (answer.find("/first"), answer.find("/second"));
    assert!(a.is_some() && b.is_some() && a < b, "{answer}");
}

#[tokio::test]
async fn disguised_login_paths_cannot_dodge_the_seat() {
    let (up, g) = gateway(1).await;
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    let before = up.seen.sessions.load(std::sync::atomic::Ordering::SeqCst);
    for path in [
        "//login",
        "/LOGIN",
        "/Login",
        "/login;jsessionid=abc",
        "/x/../login",
        "/x/%2e%2e/login",
        "/%6Cogin",
        "/./login",
    ] {
        let r = login_at(&g, path, "bob", PASSWORD).await;
        assert_eq!(r.status(), 503, "{path}: a login dodged the full pool");
        assert!(set_cookie(&r, "SID").is_none(), "{path}");
    }
    assert_eq!(
        up.seen.sessions.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "the app logged someone in past a full pool"
    );
    assert_eq!(g.in_use("crm").await, 1);
}

/// An app that logs in with `POST /login` (cookie `SID=ws-user`) and upgrades `GET /ws` to an
/// echo socket, written over raw TCP so the 101 and the bytes after it are exactly an app's.
async fn websocket_app() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = c.read_exact(&mut body).await;
                if head.starts_with("POST /login") {
                    let _ = c
                        .write_all(b"HTTP/1.1 302 Found\r\nLocation: /home\r\nSet-Cookie: SID=ws-user; Path=/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                } else if head.starts_with("GET /ws") {
                    let _ = c
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                } else {
                    let _ = c
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_open_websocket_keeps_its_seat_and_frees_it_when_closed() {
    let app = websocket_app().await;
    let up = upstream("SID").await;
    let mut vars = basic_vars(&up, 1);
    set(&mut vars, "upstream", &app.to_string());
    set(&mut vars, "idle", "1s");
    let g = Gateway::start(BASIC, &vars).await;
    let r = login(&g, "ann", PASSWORD, None).await;
    assert_eq!(set_cookie(&r, "SID").as_deref(), Some("ws-user"));
    let mut ws = connect(&g).await;
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nCookie: SID=ws-user\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            ws.read(&mut b).await.unwrap(),
            1,
            "socket closed before the 101"
        );
        head.push(b[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    ws.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    // Three idle timeouts pass with the socket open and silent: the seat is still held.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        g.in_use("crm").await,
        1,
        "an open socket lost its seat to idle"
    );
    ws.write_all(b"pong").await.unwrap();
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"pong");
    drop(ws);
    // Closed: the seat is left to the idle rule, released with its usual reason.
    assert!(
        eventually(Duration::from_secs(5), || async {
            g.in_use("crm").await == 0
        })
        .await,
        "seat not released after the socket closed"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            g.releases("idle").await >= 1.0
        })
        .await,
        "released, but not for idle"
    );
}

/// Issue 13: no session cookie, device cookie, admin page cookie, CSRF token or password in
/// any line the gateway writes: its log (at debug), the audit log and the access log, after
/// a run that logs in, works, fails logins, rotates, signs off, beats and uses the admin page.
#[tokio::test]
async fn no_secret_reaches_any_log_line() {
    let up = upstream("SID").await;
    let mut vars = basic_vars(&up, 2);
    set(&mut vars, "seats_per", "user_device");
    let yaml = format!("access_log: {{ path: \"{{dir}}/access.jsonl\" }}\n{BASIC}");
    let g = Gateway::start(&yaml, &vars).await;
    let mut secrets: Vec<String> = vec![PASSWORD.to_string(), "secret".into(), "wrong-pw-9".into()];
    for user in ["ann", "bob"] {
        let r = login(&g, user, PASSWORD, None).await;
        let sid = set_cookie(&r, "SID").unwrap();
        let dev = set_cookie(&r, "seatgate_device").unwrap();
        assert_eq!(g.get_with_sid("/home", &sid).await.status(), 200);
        let r = g.get_with_sid("/rotate", &sid).await;
        let rotated = set_cookie(&r, "SID").unwrap();
        secrets.extend([sid, dev, rotated.clone()]);
        let _ = client()
            .post(g.url("/.seatgate/heartbeat"))
            .header("cookie", format!("SID={rotated}"))
            .send()
            .await
            .unwrap();
        let _ = g.get_with_sid("/signoff", &rotated).await;
    }
    let r = login(&g, "cat", "wrong-pw-9", None).await;
    assert_eq!(r.status(), 401);
    let _ = g.get_with_sid("/home", "forged-cookie-value-123").await;
    secrets.push("forged-cookie-value-123".into());
    // The admin page: its cookie and CSRF token.
    let r = client()
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin&password=secret")
        .send()
        .await
        .unwrap();
    let page = set_cookie(&r, "seatgate_admin").unwrap();
    let me: serde_json::Value = client()
        .get(g.admin_url("/api/me"))
        .header("cookie", format!("seatgate_admin={page}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(t) = me["csrf_token"].as_str() {
        secrets.push(t.to_string());
    }
    secrets.push(page);
    assert!(
        eventually(Duration::from_secs(3), || async {
            std::fs::read_to_string(g.dir.path().join("access.jsonl"))
                .is_ok_and(|s| s.lines().count() >= 10)
        })
        .await,
        "no access log"
    );
    let files = [
        ("gateway log", g.log()),
        (
            "audit log",
            std::fs::read_to_string(g.dir.path().join("audit.jsonl")).unwrap_or_default(),
        ),
        (
            "access log",
            std::fs::read_to_string(g.dir.path().join("access.jsonl")).unwrap_or_default(),
        ),
    ];
    for (name, text) in &files {
        assert!(!text.is_empty(), "{name} is empty");
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name} contains the secret {s:?}:\n{}",
                text.lines()
                    .filter(|l| l.contains(s.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

async fn echo_headers(g: &Gateway, xff: &str, proto: &str) -> serde_json::Value {
    client()
        .get(g.url("/echo"))
        .header("x-forwarded-for", xff)
        .header("x-forwarded-proto", proto)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Issue 13: forwarding headers a client chose reach the app only through a trusted proxy.
#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let up = upstream("SID").await;
    let vars = basic_vars(&up, 2);
    let g = Gateway::start(BASIC, &vars).await;
    let seen = echo_headers(&g, "6.6.6.6", "https").await;
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["x-forwarded-proto"],
        serde_json::json!(["http"]),
        "{seen}"
    );
    let yaml = format!("trusted_proxies: [127.0.0.0/8, \"::1\"]\n{BASIC}");
    let g = Gateway::start(&yaml, &vars).await;
    let seen = echo_headers(&g, "6.6.6.6", "https").await;
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        serde_json::json!(["6.6.6.6, 127.0.0.1"]),
        "{seen}"
    );
    assert_eq!(
        seen["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"]),
        "{seen}"
    );
}

/// Issue 13: a body trickled slower than `timeouts.body`, and a kept-alive connection idle past
/// `timeouts.idle`, are closed; the trickled login takes no seat.
#[tokio::test]
async fn slow_bodies_and_idle_connections_are_closed() {
    let up = upstream("SID").await;
    let yaml = format!("timeouts: {{ body: 500ms, idle: 1s }}\n{BASIC}");
    let g = Gateway::start(&yaml, &basic_vars(&up, 1)).await;
    let started = std::time::Instant::now();
    let (answer, closed) = raw(
        &g,
        b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nusername=ann",
    )
    .await;
    assert!(closed, "a trickled body kept its connection: {answer}");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "closed only after {:?}",
        started.elapsed()
    );
    assert!(
        !answer.contains(" 200 ") && !answer.contains(" 302 "),
        "{answer}"
    );
    assert_eq!(g.in_use("crm").await, 0);
    // Kept alive, then idle: closed at `timeouts.idle`.
    let mut c = connect(&g).await;
    c.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut c).await;
    assert!(first.contains(" 200 "), "{first}");
    let idle = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(4), c.read(&mut b))
        .await
        .expect("idle connection still open after 4 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "unexpected bytes on an idle connection");
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        idle.elapsed()
    );
}

/// An app on a raw socket that answers every request with its head at once and its 4-byte
/// body `pause` later: a response under way for longer than `timeouts.idle`.
async fn pausing_app(pause: Duration) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    head.clear();
                    let h =
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\n";
                    if c.write_all(h).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                    if c.write_all(b"done").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `timeouts.idle` bounds waiting, not working: a connection that never sends a request is
/// closed at it as an idle kept-alive one is, while a response under way for longer (its
/// head sent, its body late, or all of it late) reaches the client whole on a connection that
/// stays open for the next request.
#[tokio::test]
async fn idle_bounds_waits_for_requests_not_responses_under_way() {
    let app = pausing_app(Duration::from_millis(2500)).await;
    let up = upstream("SID").await;
    let yaml = format!("timeouts: {{ idle: 1s }}\n{BASIC}");
    let mut vars = basic_vars(&up, 1);
    set(&mut vars, "upstream", &app.to_string());
    let g = Gateway::start(&yaml, &vars).await;

    // Connected, silent: closed at `timeouts.idle`, without a word.
    let mut c = connect(&g).await;
    let opened = std::time::Instant::now();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(4), c.read(&mut b))
        .await
        .expect("a silent connection still open after 4 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&b[..n]));
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        opened.elapsed()
    );

    // The app sends its head, then its body 2.5 s later: the connection was busy all along.
    let mut c = connect(&g).await;
    for round in 0..2 {
        c.write_all(b"GET /report HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"done") {
            let n = tokio::time::timeout(Duration::from_secs(6), c.read(&mut b))
                .await
                .expect("the late body never came")
                .unwrap();
            assert!(
                n > 0,
                "closed mid-response (round {round}): {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&b[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    }
    drop(c);

    // All of the answer late (the app's `/slow`, 1.5 s): answered, not cut off.
    let g2 = Gateway::start(&yaml, &basic_vars(&up, 1)).await;
    let r = client().get(g2.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow done");
}

/// Issue 13: a device cookie copied from another user, or made up, buys no seat: the seat a
/// re-login may reuse is the same user's on the same device, nothing else.
#[tokio::test]
async fn forged_device_cookies_buy_no_seat() {
    let up = upstream("SID").await;
    let mut vars = basic_vars(&up, 1);
    set(&mut vars, "seats_per", "user_device");
    let g = Gateway::start(BASIC, &vars).await;
    let r = login(&g, "ann", PASSWORD, None).await;
    let dev = set_cookie(&r, "seatgate_device").unwrap();
    for forged in [dev.clone(), "0".repeat(32), "not-a-device".into()] {
        let r = login(
            &g,
            "bob",
            PASSWORD,
            Some(&format!("seatgate_device={forged}")),
        )
        .await;
        assert_eq!(r.status(), 503, "bob got in with device cookie {forged:?}");
    }
    let list = g.sessions().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["user"], "ann");
    assert_eq!(g.in_use("crm").await, 1);
}

/// Issue 13: `timeouts.header` bounds a whole request head, from its first byte to its empty
/// line: a head trickled a byte at a time is closed at the deadline (pingora alone bounds only
/// each read), while a client slow but within it is served, a body may take longer, and the
/// wait between kept-alive requests does not count.
#[tokio::test]
async fn trickled_heads_are_closed_at_the_header_timeout() {
    let up = upstream("SID").await;
    let yaml = format!("timeouts: {{ header: 1s, body: 5s, idle: 10s }}\n{BASIC}");
    let g = Gateway::start(&yaml, &basic_vars(&up, 1)).await;

    // Slowloris: one byte every 100 ms would take 5 s; the gateway closes at 1 s.
    let mut c = connect(&g).await;
    let head = b"GET /trickled HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaa\r\n\r\n";
    let first = std::time::Instant::now();
    let mut sent = 0;
    let mut closed_at = None;
    for b in head.iter() {
        if c.write_all(&[*b]).await.is_err() {
            closed_at = Some(first.elapsed());
            break;
        }
        sent += 1;
        let mut buf = [0u8; 512];
        // A span in which the client is slow on purpose; the gateway's close ends it early.
        match tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_at = Some(first.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!(
                "answered a trickled head: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    let at = closed_at.unwrap_or_else(|| panic!("the whole head ({sent} bytes) was accepted"));
    assert!(
        at >= Duration::from_millis(900) && at < Duration::from_millis(2500),
        "closed after {at:?}"
    );
    assert!(sent < head.len(), "closed only after the whole head");
    assert_eq!(up.seen.count("/trickled"), 0);

    // Half a head, then silence: nothing arrives to be refused, the deadline alone closes it.
    let mut c = connect(&g).await;
    c.write_all(b"GET /stalled HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let stalled = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled head is closed, got {r:?}"
    );
    let at = stalled.elapsed();
    assert!(
        at >= Duration::from_millis(900) && at < Duration::from_millis(2500),
        "stalled head closed after {at:?}"
    );
    assert_eq!(up.seen.count("/stalled"), 0);

    // Slow but within the deadline: the head in three parts over 600 ms is served.
    let mut c = connect(&g).await;
    for part in [
        &b"GET /slow-head HTTP/1.1\r\n"[..],
        b"Host: a\r\n",
        b"X-A: b\r\n\r\n",
    ] {
        c.write_all(part).await.unwrap();
        // Time that must pass: the client is slow, within the limit.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let answer = read_response(&mut c).await;
    assert!(answer.contains(" 200 "), "{answer}");
    // Kept alive and idle past the header timeout (the behaviour: the wait between requests is
    // not a head), then a request with a body that takes longer than the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.write_all(b"POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    for part in [&b"cd"[..], b"ef"] {
        // Time that must pass: the body comes slower than the header timeout, within `body`.
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.write_all(part).await.unwrap();
    }
    let answer = read_response(&mut c).await;
    assert!(answer.contains(" 200 "), "{answer}");
    assert!(answer.contains("\"body_len\":6"), "{answer}");
    assert_eq!(up.seen.count("/slow-head"), 1);
    assert_eq!(up.seen.count("/slow-body"), 1);
}
