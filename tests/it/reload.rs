//! Issue 7: hot reload (SIGHUP, `seatgate reload`) and graceful upgrade (`run -u`) keep
//! sessions and connections.

use crate::harness::*;
use crate::redis::{redis_url, redis_vars, Prefix, REDIS_CFG};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// One request on an already open keep-alive connection; returns the status. (Async: the
/// upstream runs on the test's runtime.)
async fn keepalive_get(conn: &mut TcpStream, path: &str, sid: &str) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nCookie: SID={sid}\r\nConnection: keep-alive\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{path}: timed out; got so far: {}",
                    String::from_utf8_lossy(&buf)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&byte[..n]);
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

fn rewrite(g: &Gateway, from: &str, to: &str) {
    let text = std::fs::read_to_string(&g.config_path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&g.config_path, text.replace(from, to)).unwrap();
}

async fn capacity(g: &Gateway) -> f64 {
    g.metric(r#"seatgate_seats_capacity{product="crm"}"#).await
}

async fn session_get(g: &Gateway, sid: &str) -> u16 {
    g.get_with_sid("/home", sid).await.status().as_u16()
}

#[tokio::test]
async fn sighup_reload_changes_seats_and_keeps_sessions_and_connections() {
    let up = upstream("SID").await;
    let g = Gateway::start(BASIC, &basic_vars(&up, 1)).await;
    let pid = g.child.as_ref().unwrap().id();
    let ann = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    let mut conn = TcpStream::connect(g.listen).await.unwrap();
    assert_eq!(keepalive_get(&mut conn, "/home", &ann).await, 200);

    // seats 1 → 2 via SIGHUP: the live session and the open connection stay.
    rewrite(&g, "    seats: 1\n", "    seats: 2\n");
    signal(pid, "-HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            capacity(&g).await == 2.0
        })
        .await,
        "{}",
        g.log()
    );
    assert_eq!(
        keepalive_get(&mut conn, "/home", &ann).await,
        200,
        "connection kept across reload"
    );
    assert_eq!(session_get(&g, &ann).await, 200);
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 302);
    assert_eq!(login(&g, "cat", PASSWORD, None).await.status(), 503);

    // A bad config is refused, logged, and the old one kept.
    let good = std::fs::read_to_string(&g.config_path).unwrap();
    std::fs::write(
        &g.config_path,
        good.replace("    seats: 2\n", "    seats: lots\n"),
    )
    .unwrap();
    signal(pid, "-HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            g.log().contains("reload refused")
        })
        .await,
        "{}",
        g.log()
    );
    assert_eq!(capacity(&g).await, 2.0);
    assert_eq!(keepalive_get(&mut conn, "/home", &ann).await, 200);
    assert_eq!(login(&g, "cat", PASSWORD, None).await.status(), 503);
    assert!(g.child.as_ref().is_some(), "still running");

    // `seatgate reload --admin URL`: refused with the reason, then accepted.
    let cli = |g: &Gateway| {
        Command::new(env!("CARGO_BIN_EXE_seatgate"))
            .args([
                "reload",
                "--admin",
                &g.admin_url(""),
                "--password",
                "secret",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = cli(&g);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused") && err.contains("seats"),
        "{err}"
    );
    std::fs::write(
        &g.config_path,
        good.replace("    seats: 2\n", "    seats: 3\n"),
    )
    .unwrap();
    let out = cli(&g);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(capacity(&g).await, 3.0);
    assert_eq!(login(&g, "cat", PASSWORD, None).await.status(), 302);
    assert_eq!(keepalive_get(&mut conn, "/home", &ann).await, 200);
    assert_eq!(g.in_use("crm").await, 3);
}

/// `run -u`: the new process takes the listeners, the old one finishes what it was doing.
/// On the Redis store both processes see the same seats, so sessions simply carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_keeps_sessions_and_inflight_requests() {
    let up = upstream("SID").await;
    let p = Prefix::new();
    let mut g = Gateway::start(
        REDIS_CFG,
        &redis_vars(&up, &redis_url(), &p, 2, "fail_closed"),
    )
    .await;
    let old_pid = g.child.as_ref().unwrap().id();
    let ann = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    assert_eq!(session_get(&g, &ann).await, 200);

    // A keep-alive client that keeps sending through the whole upgrade.
    let ka = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let slow = {
        let (url, sid) = (g.url("/slow"), ann.clone());
        tokio::spawn(async move {
            let r = client()
                .get(url)
                .header("cookie", format!("SID={sid}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // In flight: the app has the request.
    assert!(
        eventually(Duration::from_secs(5), || async {
            up.seen.count("/slow") == 1
        })
        .await,
        "the slow request never reached the app"
    );

    // The new process waits for the sockets on pingora's upgrade socket (`server_conf`'s path,
    // named after our admin port): SIGQUIT once it listens there. The old process would retry
    // for 5 s anyway; this keeps the test from depending on that. Only the new process creates
    // the file, so a stale one is removed first.
    let upgrade_sock = format!(
        "/tmp/seatgate_upgrade_{}.sock",
        g.admin.to_string().replace([':', '.', '[', ']'], "_")
    );
    let _ = std::fs::remove_file(&upgrade_sock);
    let log = std::fs::File::create(g.dir.path().join("gateway-new.log")).unwrap();
    let new = Command::new(env!("CARGO_BIN_EXE_seatgate"))
        .args(["run", "-u", "--config"])
        .arg(&g.config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::path::Path::new(&upgrade_sock).exists()
        })
        .await,
        "the new process never listened on {upgrade_sock}"
    );
    signal(old_pid, "-QUIT");

    let mut statuses = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let r = ka
            .get(g.url("/home"))
            .header("cookie", format!("SID={ann}"))
            .send()
            .await;
        statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{}",
        g.log()
    );
    assert_eq!(
        slow.await.unwrap(),
        (200, "slow done".to_string()),
        "in-flight request finished"
    );

    // The old process exits by itself; the new one serves everything.
    let mut old = g.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "old process did not exit: {}",
            g.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g.child = Some(new);
    assert_eq!(session_get(&g, &ann).await, 200);
    assert_eq!(
        ka.get(g.url("/home"))
            .header("cookie", format!("SID={ann}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 302);
    assert_eq!(login(&g, "cat", PASSWORD, None).await.status(), 503);
    let r = client().get(g.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
