//! Issue 3: the core gateway against a real upstream over real sockets.

use crate::harness::*;
use std::time::Duration;

async fn start(
    seats: u32,
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> (Upstream, Gateway) {
    let up = upstream("SID").await;
    let mut vars = basic_vars(&up, seats);
    tweak(&mut vars);
    let g = Gateway::start(BASIC, &vars).await;
    (up, g)
}

#[tokio::test]
async fn full_pool_denies_and_app_never_sees_it() {
    let (up, g) = start(2, |_| {}).await;
    for u in ["ann", "bob"] {
        let r = login(&g, u, PASSWORD, None).await;
        assert_eq!(r.status(), 302, "{u}");
        assert!(set_cookie(&r, "SID").is_some());
    }
    assert_eq!(up.seen.count("/login"), 2);
    let r = login(&g, "cat", PASSWORD, None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().await.unwrap();
    assert!(body.contains("All licenses are in use"), "{body}");
    assert!(
        body.contains("All 2 concurrent licenses of <strong>crm</strong>"),
        "{body}"
    );
    assert_eq!(
        up.seen.count("/login"),
        2,
        "a denied login must not reach the app"
    );
    assert_eq!(g.in_use("crm").await, 2);
    let m = g.metrics().await;
    assert!(
        m.contains(r#"seatgate_denials_total{client="default",product="crm",reason="full"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seatgate_logins_total{client="default",product="crm",result="admitted"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seatgate_seats_capacity{product="crm"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seatgate_seats_in_use{product="crm",state="standby"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn wrong_password_costs_no_seat() {
    let (up, g) = start(1, |_| {}).await;
    for _ in 0..3 {
        let r = login(&g, "ann", "nope", None).await;
        assert_eq!(r.status(), 401);
    }
    assert_eq!(up.seen.count("/login"), 3);
    assert_eq!(g.in_use("crm").await, 0);
    let r = login(&g, "bob", PASSWORD, None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(
        g.metric(r#"seatgate_logins_total{client="default",product="crm",result="failed"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn passthrough_keeps_body_headers_and_cookies() {
    let (up, g) = start(1, |_| {}).await;
    let r = client()
        .post(g.url("/echo?x=1"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-custom", "v")
        .body(vec![b'z'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/", "b=2; Path=/"]);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(echo["headers"]["x-custom"][0], "v");
    assert_eq!(echo["headers"]["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "http");
    let seen_cookie = serde_json::to_string(&echo["headers"]["cookie"]).unwrap();
    assert!(
        seen_cookie.contains("a=1") && seen_cookie.contains("b=2"),
        "{seen_cookie}"
    );
    // The login body is read by the gateway and still reaches the app intact.
    let r = login(&g, "ann", PASSWORD, None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        up.seen.last_body.lock().unwrap().as_slice(),
        format!("username=ann&password={PASSWORD}").as_bytes()
    );
}

#[tokio::test]
async fn logout_frees_the_seat_and_is_forwarded() {
    let (up, g) = start(1, |_| {}).await;
    let r = login(&g, "ann", PASSWORD, None).await;
    let sid = set_cookie(&r, "SID").unwrap();
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    let r = g.get_with_sid("/logout", &sid).await;
    assert_eq!(r.status(), 302);
    assert_eq!(up.seen.count("/logout"), 1);
    assert_eq!(g.in_use("crm").await, 0);
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 302);
    assert_eq!(g.releases("logout").await, 1.0);
}

#[tokio::test]
async fn requests_keep_the_seat_and_idle_frees_it() {
    // No sweep during the test: expiry must hold on its own.
    let (_up, g) = start(1, |v| {
        set(v, "idle", "3s");
        set(v, "sweep", "1h");
    })
    .await;
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    // 3.6 s of requests 600 ms apart: longer than the idle timeout, never idle for it.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = g.get_with_sid("/home", &sid).await;
        assert_eq!(r.status(), 200, "activity must keep the seat");
    }
    assert_eq!(g.in_use("crm").await, 1);
    // Idle: the expired seat never counts, even before the sweep.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(g.in_use("crm").await, 0);
    let r = g.get_with_sid("/home", &sid).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/login?seatgate_notice=idle");
    let cleared: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("SID=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    // The login page itself still loads with the stale cookie (no redirect loop).
    let r = g.get_with_sid("/login", &sid).await;
    assert_eq!(r.status(), 200);
    assert!(g.releases("idle").await >= 1.0);
}

#[tokio::test]
async fn max_lifetime_ends_even_an_active_session() {
    let (_up, g) = start(1, |v| set(v, "lifetime", "2s")).await;
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    let ok = eventually(Duration::from_secs(5), || async {
        let r = g.get_with_sid("/home", &sid).await;
        r.status() == 302
    })
    .await;
    assert!(ok);
    assert_eq!(g.releases("lifetime").await, 1.0);
}

#[tokio::test]
async fn unknown_cookie_adopts_a_free_seat_or_is_denied() {
    let (_up, g) = start(1, |v| set(v, "expired", "adopt")).await;
    let r = g
        .get_with_cookie("/home", "SID=from-before-the-gateway")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(g.in_use("crm").await, 1);
    let r = g.get_with_cookie("/home", "SID=another-old-one").await;
    assert_eq!(r.status(), 503);
    // The refusal is audited like any other denial: one `deny` line.
    let audit = g.dir.path().join("audit.jsonl");
    let denies = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["event"] == "deny")
            .collect::<Vec<_>>()
    };
    let audited = eventually(Duration::from_secs(3), || async { !denies().is_empty() }).await;
    assert!(audited, "{:?}", std::fs::read_to_string(&audit));
    let d = denies();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["product"], "crm");
    assert_eq!(d[0]["reason"], "full");
    // The adopted one keeps working.
    let r = g
        .get_with_cookie("/home", "SID=from-before-the-gateway")
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn same_user_same_device_reuses_the_seat() {
    let (_up, g) = start(2, |v| set(v, "seats_per", "user_device")).await;
    let r = login(&g, "ann", PASSWORD, None).await;
    let device = set_cookie(&r, "seatgate_device").expect("device cookie");
    let first = set_cookie(&r, "SID").unwrap();
    // Re-login three times from the same browser: still one seat.
    let mut last = first.clone();
    for _ in 0..3 {
        let r = login(
            &g,
            "ann",
            PASSWORD,
            Some(&format!("seatgate_device={device}")),
        )
        .await;
        assert_eq!(r.status(), 302);
        assert!(
            set_cookie(&r, "seatgate_device").is_none(),
            "known device keeps its cookie"
        );
        last = set_cookie(&r, "SID").unwrap();
    }
    assert_eq!(g.in_use("crm").await, 1);
    // The old session's seat went to the new one.
    let r = g.get_with_sid("/home", &first).await;
    assert_eq!(r.status(), 302);
    let r = g.get_with_sid("/home", &last).await;
    assert_eq!(r.status(), 200);
    // Another device of the same user takes a second seat; a third user is refused.
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    assert_eq!(g.in_use("crm").await, 2);
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
}

#[tokio::test]
async fn exempt_users_take_no_seat() {
    let (_up, g) = start(1, |_| {}).await;
    assert_eq!(login(&g, "ann", PASSWORD, None).await.status(), 302);
    for _ in 0..3 {
        assert_eq!(login(&g, "svc-backup", PASSWORD, None).await.status(), 302);
    }
    assert_eq!(g.in_use("crm").await, 1);
}

#[tokio::test]
async fn restart_keeps_live_sessions_and_drops_expired_ones() {
    let (_up, mut g) = start(2, |v| set(v, "idle", "8s")).await;
    let t0 = std::time::Instant::now();
    let keep = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    let lapse = set_cookie(&login(&g, "bob", PASSWORD, None).await, "SID").unwrap();
    g.kill();
    g.spawn().await;
    assert_eq!(g.in_use("crm").await, 2, "{}", g.log());
    // ann stays active across the restart; bob is left to lapse. Time that must pass: ann's
    // next request comes 3 s on, so her deadline moves past bob's.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let r = g.get_with_sid("/home", &keep).await;
    assert_eq!(
        r.status(),
        200,
        "a live session survives the restart: {}",
        g.log()
    );
    let touched = std::time::Instant::now();
    assert_eq!(g.in_use("crm").await, 2, "{}", g.log());
    // Activity is flushed in batches (every 200 ms here): a SIGKILL loses at most one batch.
    tokio::time::sleep(Duration::from_millis(600)).await;
    g.kill();
    // Down until bob's idle timeout (from t0) has passed while ann's (from `touched`) has not.
    let until = t0 + Duration::from_millis(8300);
    tokio::time::sleep(until.saturating_duration_since(std::time::Instant::now())).await;
    g.spawn().await;
    assert!(
        touched.elapsed() < Duration::from_millis(7900),
        "machine too slow for this timing"
    );
    assert_eq!(g.in_use("crm").await, 1, "{}", g.log());
    let r = g.get_with_sid("/home", &keep).await;
    assert_eq!(r.status(), 200);
    let r = g.get_with_sid("/home", &lapse).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/login?seatgate_notice=idle");
}

#[tokio::test]
async fn racing_logins_admit_exactly_the_pool() {
    let (up, g) = start(10, |_| {}).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = g.url("/login");
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("username=u{i}&password={PASSWORD}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut admitted = 0;
    let mut denied = 0;
    for t in tasks {
        match t.await.unwrap() {
            302 => admitted += 1,
            503 => denied += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((admitted, denied), (10, 190));
    assert_eq!(up.seen.count("/login"), 10);
    assert_eq!(g.in_use("crm").await, 10);
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_and_counts_stay_exact() {
    let (up, g) = start(1, |_| {}).await;
    let c = client();
    let post = |body: Vec<u8>, ct: Option<&str>| {
        let mut r = c.post(g.url("/login")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let form = Some("application/x-www-form-urlencoded");
    assert_eq!(
        post(b"username=\xff\xfe&password=pw".to_vec(), form)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(b"password=pw".to_vec(), form).await.unwrap().status(),
        400
    );
    assert_eq!(
        post(b"username=a&password=pw".to_vec(), None)
            .await
            .unwrap()
            .status(),
        415
    );
    let big = format!("username=a&password=pw&pad={}", "x".repeat(70_000));
    assert_eq!(post(big.into_bytes(), form).await.unwrap().status(), 413);
    assert_eq!(
        up.seen.count("/login"),
        0,
        "malformed logins never reach the app"
    );
    // Malformed and duplicate cookies: no 500, the request goes through.
    for cookie in [
        ";;;==",
        "SID",
        "SID=; SID=",
        "SID=\"unterminated",
        "=x; ;SID",
    ] {
        let r = c
            .get(g.url("/home"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 200 || r.status() == 302,
            "{cookie:?}: {}",
            r.status()
        );
    }
    assert_eq!(g.in_use("crm").await, 0);
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    // Two different values: the gateway cannot tell which session the app reads (decided in
    // issue 11), so the request is refused; the seat itself is untouched.
    let r = g
        .get_with_cookie("/home", &format!("SID={sid}; SID=other"))
        .await;
    assert_eq!(r.status(), 400);
    let r = g
        .get_with_cookie("/home", &format!("SID={sid}; SID={sid}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(g.in_use("crm").await, 1);
}

#[tokio::test]
async fn heartbeat_answers_204_or_410() {
    let (up, g) = start(1, |_| {}).await;
    let sid = set_cookie(&login(&g, "ann", PASSWORD, None).await, "SID").unwrap();
    let hb = |cookie: String| {
        client()
            .post(g.url("/.seatgate/heartbeat"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(hb(format!("SID={sid}")).await.unwrap().status(), 204);
    assert_eq!(hb("SID=unknown".into()).await.unwrap().status(), 410);
    assert_eq!(up.seen.count("/.seatgate/heartbeat"), 0);
}

#[tokio::test]
async fn admin_api_needs_auth_and_metrics_are_promtool_clean() {
    let (_up, g) = start(1, |_| {}).await;
    let c = client();
    assert_eq!(
        c.get(g.admin_url("/api/sessions"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(g.admin_url("/api/sessions"))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    login(&g, "ann", PASSWORD, None).await;
    let list = g.admin_json("/api/sessions").await;
    assert_eq!(list[0]["user"], "ann");
    assert_eq!(list[0]["product"], "crm");
    for k in [
        "id",
        "device",
        "client",
        "license_type",
        "state",
        "started_at",
        "last_activity",
        "expires_at",
    ] {
        assert!(list[0].get(k).is_some(), "missing {k}");
    }
    let text = g.metrics().await;
    // Every bound the README lists is exported from the start, so an alert can rely on it.
    for limit in [
        "admin_failures",
        "admin_credentials",
        "admin_page_sessions",
        "self_service_tokens",
        "self_service_holds",
        "access_log_queue",
        "app_logouts",
    ] {
        let series = format!("seatgate_limits_reached_total{{limit=\"{limit}\"}} 0");
        assert!(text.contains(&series), "missing {series}");
    }
    // The waiting line's series too, so its panels and `rate()` have a line from the start.
    for series in [
        r#"seatgate_queue_length{pool="default",product="crm"} 0"#,
        r#"seatgate_queue_total{product="crm",result="full"} 0"#,
        r#"seatgate_queue_wait_seconds_count{product="crm"} 0"#,
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    promtool_check(&text);
}

#[tokio::test]
async fn keep_alive_connections_carry_several_requests_and_denials() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, g) = start(1, |_| {}).await;
    login(&g, "ann", PASSWORD, None).await;
    // Sequential requests on one connection (pingora does not serve pipelined requests):
    // a pass-through, a denial of the full pool, and another pass-through must all be
    // answered without the connection being closed in between.
    let mut conn = tokio::net::TcpStream::connect(g.listen).await.unwrap();
    async fn read_one(conn: &mut tokio::net::TcpStream, req: &str) -> String {
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
                .await
                .expect("response within 5 s")
                .unwrap();
            assert!(
                n > 0,
                "connection closed early: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    return text;
                }
            }
        }
    }
    let a = read_one(&mut conn, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let denied = read_one(
        &mut conn,
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 25\r\n\r\nusername=bob&password=pw1",
    )
    .await;
    let b = read_one(&mut conn, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        a.starts_with("HTTP/1.1 200") && a.contains(r#""path":"/a""#),
        "{a}"
    );
    assert!(
        !denied.starts_with("HTTP/1.1 200"),
        "full pool must deny: {denied}"
    );
    assert!(
        b.starts_with("HTTP/1.1 200") && b.contains(r#""path":"/b""#),
        "{b}"
    );
}
