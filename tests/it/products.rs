//! Issue 4: several products, client kinds with their own answers, checks that take no seat,
//! license types (pools, groups' reserve/max, named users, grants, overflow).

use crate::harness::*;
use reqwest::StatusCode;
use std::time::Duration;

/// A shipped preset, pointed at test ports, a test upstream and `seats` seats.
async fn preset(file: &str, up: &Upstream, seats: u32) -> Gateway {
    let text =
        std::fs::read_to_string(format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let l = if t.starts_with("listen: 0.0.0.0") {
            format!("{indent}listen: \"{{listen}}\"")
        } else if t.starts_with("listen: 127.0.0.1:9090") {
            format!("{indent}listen: \"{{admin}}\"\n{indent}users: [{{ name: admin, password_hash: \"{{admin_hash}}\", role: super }}]")
        } else if t.starts_with("users: []") {
            String::new()
        } else if t.starts_with("path: /var/lib") {
            format!("{indent}path: \"{{dir}}/seats.redb\"\n{indent}sweep_interval: 200ms")
        } else if t.starts_with("path: /var/log") {
            format!("{indent}path: \"{{dir}}/audit.jsonl\"")
        } else if t.starts_with("upstream:") {
            format!("{indent}upstream: \"{}\"", up.addr)
        } else if t.starts_with("seats:") {
            format!("{indent}seats: {seats}")
        } else {
            line.to_string()
        };
        out.push_str(&l);
        out.push('\n');
    }
    Gateway::start(&out, &[]).await
}

async fn infor_login(g: &Gateway, user: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client()
        .post(g.url("/SlxClient/Login.aspx"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("ctl00%24ContentPlaceHolderArea%24slxLogin%24UserName={user}&ctl00%24ContentPlaceHolderArea%24slxLogin%24Password={PASSWORD}"));
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

async fn get(g: &Gateway, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut r = client().get(g.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn infor_preset_every_client_gets_its_own_answer() {
    let up = upstream("ASP.NET_SessionId").await;
    let g = preset("infor-crm.yaml", &up, 1).await;
    let basic = ("authorization", "Basic dXNlcjpwdw==");
    // Free pool: checks pass, take no seat, and reach the app.
    let checks: [(&str, Vec<(&str, &str)>); 3] = [
        ("/sdata/slx/mobile/-/accounts", vec![basic]),
        (
            "/sdata/slx/dynamic/-/accounts",
            vec![basic, ("user-agent", "Xbar/8.1")],
        ),
        (
            "/sdata/slx/system/-/mail",
            vec![basic, ("user-agent", "Microsoft Outlook 16.0")],
        ),
    ];
    for (path, h) in &checks {
        assert_eq!(get(&g, path, h).await.0, 200, "{path}");
    }
    assert_eq!(g.in_use("infor-crm").await, 0, "checks take no seat");
    // A network (LAN) client takes the only seat.
    let r = infor_login(&g, "lan-user", &[("x-slx-client", "network")]).await;
    assert_eq!(r.status(), 302);
    assert_eq!(g.in_use("infor-crm").await, 1);
    let before = up.seen.count("/sdata/slx/mobile/-/accounts");
    // Full pool: every client kind gets its product's own words.
    let (s, b) = get(&g, checks[0].0, &checks[0].1).await;
    assert_eq!(
        (s.as_u16(), b.as_str()),
        (401, "the user name or password is invalid")
    );
    let (s, b) = get(&g, checks[1].0, &checks[1].1).await;
    assert_eq!(
        (s.as_u16(), b.as_str()),
        (503, "one or more errors occurred")
    );
    let (s, b) = get(&g, checks[2].0, &checks[2].1).await;
    assert_eq!(
        (s.as_u16(), b.as_str()),
        (
            401,
            "could not process 'Send To CRM' message: The username or password is incorrect"
        )
    );
    assert_eq!(
        up.seen.count("/sdata/slx/mobile/-/accounts"),
        before,
        "failed checks never reach the app"
    );
    let r = infor_login(&g, "web-user", &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(
        r.text().await.unwrap(),
        "there are no concurrent licenses available for use"
    );
    let r = infor_login(&g, "lan-2", &[("x-slx-client", "network")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        "no Valid Concurrent User license available"
    );
    // A check with no credentials goes to the app unchanged (it answers 401 itself).
    assert_eq!(get(&g, "/sdata/slx/mobile/-/accounts", &[]).await.0, 200);
    let m = g.metrics().await;
    assert!(
        m.contains(r#"seatgate_checks_total{client="mobile",product="infor-crm",result="fail"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seatgate_checks_total{client="mobile",product="infor-crm",result="pass"} 1"#),
        "{m}"
    );
    let full: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("seatgate_denials_total{") && l.contains(r#"reason="check_full""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(full, 3, "each failed check is one check_full denial: {m}");
    assert!(
        m.contains(
            r#"seatgate_denials_total{client="mobile",product="infor-crm",reason="check_full"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"seatgate_request_duration_seconds_count{action="check",product="infor-crm"} 6"#
        ),
        "every check with credentials is timed as a check: {m}"
    );
    assert_eq!(g.in_use("infor-crm").await, 1);
}

#[tokio::test]
async fn accucare_and_json_presets_answer_in_their_own_words() {
    let up = upstream("ACCUCARESESSION").await;
    let g = preset("accucare.yaml", &up, 1).await;
    let form = |u: &str| format!("UserName={u}&Password={PASSWORD}");
    let post = |body: String| {
        client()
            .post(g.url("/Account/Login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(post(form("a")).await.unwrap().status(), 302);
    let r = post(form("b")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "All Licenses are in-use");

    let up = upstream("api_session").await;
    let g = preset("json-api.yaml", &up, 1).await;
    let login = |u: &'static str| {
        client()
            .post(g.url("/api/v1/sessions"))
            .header("x-user", u)
            .header("x-password", PASSWORD)
            .send()
    };
    assert_eq!(login("a").await.unwrap().status(), 302);
    assert_eq!(
        login("a").await.unwrap().status(),
        302,
        "seats_per: user — same user, same seat"
    );
    let r = login("b").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "license_unavailable");
    let (s, b) = get(&g, "/api/v1/availability", &[("authorization", "Bearer t")]).await;
    assert_eq!((s.as_u16(), b.as_str()), (503, r#"{"available":false}"#));
    let r = client()
        .post(g.url("/api/v1/sessions"))
        .header("x-password", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "login without the user header");
}

const TWO_PRODUCTS: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users: [{ name: admin, password_hash: "{admin_hash}", role: super }]
store: { kind: embedded, path: "{dir}/seats.redb" }
products:
  - name: crm
    upstream: "{up1}"
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, user: { form_field: username } }
    seats: 1
  - name: reports
    upstream: "{up2}"
    path_prefix: /reports
    session: { cookie: RSID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /reports/login, user: { form_field: username } }
    seats: 1
"#;

#[tokio::test]
async fn products_are_routed_and_pools_are_independent() {
    let (up1, up2) = (upstream("SID").await, upstream("RSID").await);
    let g = Gateway::start(
        TWO_PRODUCTS,
        &[("up1", up1.addr.to_string()), ("up2", up2.addr.to_string())],
    )
    .await;
    assert_eq!(login(&g, "a", PASSWORD, None).await.status(), 302);
    assert_eq!(login(&g, "b", PASSWORD, None).await.status(), 503);
    let r = client()
        .post(g.url("/reports/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=b&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "a full crm pool does not affect reports");
    assert_eq!(up2.seen.count("/reports/login"), 1);
    assert_eq!(up1.seen.count("/reports/login"), 0);
    assert_eq!((g.in_use("crm").await, g.in_use("reports").await), (1, 1));
}

const LICENSE_TYPES: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users: [{ name: admin, password_hash: "{admin_hash}", role: super }]
store: { kind: embedded, path: "{dir}/seats.redb", sweep_interval: 200ms }
products:
  - name: crm
    upstream: "{up}"
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, user: { form_field: username } }
    logout: { path: /logout }
    named_users: [ceo]
    max_sessions: 2
    pools:
      - name: full
        default: true
        grants:
          - { seats: 3 }
          - { seats: 1, expires: "{soon}" }
      - name: reports-only
        seats: 1
        users: [rita, rob, rex]
        overflow: { seat_minutes: 0.05 }
    groups:
      - { name: ops, users: [olga, oscar], reserve: 1, pool: full }
      - { name: interns, users: [ida, ian], max: 1, pool: full }
"#;

#[tokio::test]
async fn pools_groups_named_users_grants_and_overflow() {
    let up = upstream("SID").await;
    let soon = std::time::SystemTime::now() + Duration::from_secs(8);
    let soon = humantime::format_rfc3339_seconds(soon).to_string();
    let g = Gateway::start(
        LICENSE_TYPES,
        &[("up", up.addr.to_string()), ("soon", soon)],
    )
    .await;
    let ok = |r: reqwest::Response| r.status() == 302;
    // reports-only pool: its own single seat, then 3 seat-seconds of pay-per-use overflow.
    assert!(ok(login(&g, "rita", PASSWORD, None).await));
    let rob = set_cookie(&login(&g, "rob", PASSWORD, None).await, "SID").expect("overflow admits");
    // named users: always in, never counted.
    for _ in 0..3 {
        assert!(ok(login(&g, "ceo", PASSWORD, None).await));
    }
    // interns: max 1.
    assert!(ok(login(&g, "ida", PASSWORD, None).await));
    assert_eq!(login(&g, "ian", PASSWORD, None).await.status(), 503);
    // max_sessions: 2 per user.
    let a1 = set_cookie(&login(&g, "a", PASSWORD, None).await, "SID").unwrap();
    assert!(ok(login(&g, "a", PASSWORD, None).await));
    assert_eq!(login(&g, "a", PASSWORD, None).await.status(), 503);
    // full pool: 3 + 1 granted seats, 1 reserved for ops: ida, a, a hold the other 3.
    assert_eq!(
        login(&g, "b", PASSWORD, None).await.status(),
        503,
        "the ops reserve is not for b"
    );
    let usage = g.usage().await;
    let full = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["pool"] == "full")
        .unwrap()
        .clone();
    assert_eq!(
        (full["capacity"].as_u64(), full["in_use"].as_u64()),
        (Some(4), Some(3))
    );
    assert!(
        ok(login(&g, "olga", PASSWORD, None).await),
        "ops uses its reserve"
    );
    assert_eq!(
        login(&g, "c", PASSWORD, None).await.status(),
        503,
        "no overflow on this pool"
    );
    // The overflow allowance is metered while rob holds it, then refused.
    let spent = eventually(Duration::from_secs(6), || async {
        g.metric(r#"seatgate_overflow_used_seconds{pool="reports-only",product="crm"}"#)
            .await
            >= 3.0
    })
    .await;
    assert!(spent, "overflow metered");
    assert_eq!(
        login(&g, "rex", PASSWORD, None).await.status(),
        503,
        "overflow spent"
    );
    g.get_with_sid("/logout", &rob).await;
    // Grant expiry: capacity shrinks to 3; live sessions stay, new logins wait.
    let shrunk = eventually(Duration::from_secs(10), || async {
        let u = g.usage().await;
        u.as_array()
            .unwrap()
            .iter()
            .any(|u| u["pool"] == "full" && u["capacity"] == 3)
    })
    .await;
    assert!(shrunk);
    assert_eq!(
        g.in_use("crm").await,
        5,
        "an expired grant ends no live session (4 full + rita)"
    );
    let r = g.get_with_sid("/home", &a1).await;
    assert_eq!(r.status(), 200);
    g.get_with_sid("/logout", &a1).await;
    assert_eq!(
        login(&g, "e", PASSWORD, None).await.status(),
        503,
        "still at the shrunk capacity"
    );
    let text = g.metrics().await;
    for reason in ["group_max", "user_max", "full", "overflow_spent"] {
        assert!(
            text.contains(&format!(r#"product="crm",reason="{reason}""#)),
            "{reason}: {text}"
        );
    }
}

#[tokio::test]
async fn config_errors_for_license_types() {
    let bad = [
        (
            LICENSE_TYPES.replace("reserve: 1", "reserve: 9"),
            "reserve 9 is larger than pool `full`",
        ),
        (
            LICENSE_TYPES.replace(
                "pool: full }\n      - { name: interns",
                "pool: nope }\n      - { name: interns",
            ),
            "unknown pool `nope`",
        ),
        (
            LICENSE_TYPES.replace(
                "users: [rita, rob, rex]",
                "users: [rita, rob, rex]\n        default: true",
            ),
            "more than one pool is `default: true`",
        ),
        (
            LICENSE_TYPES.replace(
                "        users: [rita, rob, rex]",
                "        users: [rita, a]\n      - name: x\n        seats: 1\n        users: [a]",
            ),
            "already mapped to another pool",
        ),
    ];
    for (yaml, want) in bad {
        let yaml = yaml.replace("{soon}", "2999-01-01");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        let text = yaml
            .replace("{listen}", "127.0.0.1:1")
            .replace("{admin}", "127.0.0.1:2")
            .replace("{admin_hash}", ADMIN_HASH)
            .replace("{dir}", "/tmp")
            .replace("{up}", "127.0.0.1:3");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "want `{want}`: {err}"
        );
        assert!(err.contains("products[0]."), "names the key: {err}");
    }
}
