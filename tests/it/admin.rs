//! Issue 5: the admin API and the License Usage page over real sockets (and a real browser):
//! auth and roles, CSRF for the page's cookie, pause/resume, reports, ending with notice, and
//! bad input.

use crate::browser::Browser;
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Two products (crm at `/`, hr at `/hr`) on one upstream, and one admin per role. Every admin
/// has the password `secret`.
const CONFIG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  session_ttl: 1h
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
    - { name: viewer, password_hash: "{admin_hash}", role: super, permission: view }
    - { name: hrboss, password_hash: "{admin_hash}", role: domain, products: [hr] }
    - { name: ann, password_hash: "{admin_hash}", role: own }
store:
  {store}
  sweep_interval: 200ms
  flush_interval: 200ms
audit:
  path: "{dir}/audit.jsonl"
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
      expired: {expired}
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats_per: session
    seats: {seats}
    clients:
      - kind: probe
        match: { path_prefix: /check }
        mode: check
        on_full: { status: 401, body: "no license" }
      - kind: web
        mode: hold
  - name: hr
    upstream: "{upstream}"
    path_prefix: /hr
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
    login: { path: /hr/login, method: POST, user: { form_field: username } }
    seats_per: session
    seats: 2
"#;

const EMBEDDED: &str = "kind: embedded\n  path: \"{dir}/seats.redb\"";

async fn start(seats: u32, expired: &str) -> (Upstream, Gateway) {
    start_on(EMBEDDED, seats, expired).await
}

async fn start_on(store: &str, seats: u32, expired: &str) -> (Upstream, Gateway) {
    let up = upstream("SID").await;
    let text = CONFIG.replace("{store}", store);
    let g = Gateway::start(
        &text,
        &[
            ("upstream", up.addr.to_string()),
            ("seats", seats.to_string()),
            ("expired", expired.to_string()),
        ],
    )
    .await;
    (up, g)
}

/// Logs `user` in to the product whose login is at `path`; returns the session cookie value.
async fn app_login(g: &Gateway, path: &str, user: &str) -> String {
    let r = login_at(g, path, user, PASSWORD).await;
    assert_eq!(r.status(), 302, "login of {user}");
    set_cookie(&r, "SID").unwrap()
}

async fn get(g: &Gateway, admin: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(g.admin_url(path))
        .basic_auth(admin, Some("secret"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(g: &Gateway, admin: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(g.admin_url(path))
        .basic_auth(admin, Some("secret"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The id of `user`'s session as `admin` lists it.
async fn session_id(g: &Gateway, admin: &str, user: &str) -> String {
    let (_, list) = get(g, admin, &format!("/api/sessions?user={user}")).await;
    list[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session of {user}: {list}"))
        .to_string()
}

fn users(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Logs in to the page; returns the cookie value.
async fn page_login(g: &Gateway, user: &str) -> String {
    let r = client()
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password=secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let raw = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/"] {
        assert!(raw.contains(attr), "{attr} missing in {raw}");
    }
    set_cookie(&r, "seatgate_admin").unwrap()
}

fn audit_lines(g: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(g.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn audit_has(g: &Gateway, f: impl Fn(&Value) -> bool) -> bool {
    eventually(Duration::from_secs(3), || {
        let found = audit_lines(g).iter().any(&f);
        async move { found }
    })
    .await
}

#[tokio::test]
async fn api_needs_auth_and_the_right_role() {
    let (_up, g) = start(3, "login").await;
    app_login(&g, "/login", "ann").await;
    app_login(&g, "/login", "bob").await;
    app_login(&g, "/hr/login", "hal").await;
    let c = client();
    for (method, path) in [
        ("GET", "/api/sessions"),
        ("GET", "/api/usage"),
        ("GET", "/api/reports"),
        ("GET", "/api/me"),
        ("POST", "/api/sessions/end"),
        ("POST", "/api/sessions/pause"),
        ("POST", "/api/reload"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = c
            .request(m.clone(), g.admin_url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without auth");
        let r = c
            .request(m.clone(), g.admin_url(path))
            .basic_auth("admin", Some("nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a wrong password");
        let r = c
            .request(m, g.admin_url(path))
            .header("authorization", "Basic !!!")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a malformed header");
    }

    // super sees all; domain only its products; own only its own sessions.
    assert_eq!(
        users(&get(&g, "admin", "/api/sessions").await.1),
        ["ann", "bob", "hal"]
    );
    assert_eq!(users(&get(&g, "hrboss", "/api/sessions").await.1), ["hal"]);
    assert_eq!(users(&get(&g, "ann", "/api/sessions").await.1), ["ann"]);
    let (_, usage) = get(&g, "hrboss", "/api/usage").await;
    assert_eq!(usage.as_array().unwrap().len(), 1);
    assert_eq!(usage[0]["product"], "hr");

    // view-only may look but not end; domain cannot reach other products (404, not a hint
    // that the session exists); only super reloads.
    let bob = session_id(&g, "admin", "bob").await;
    assert_eq!(
        post(&g, "viewer", "/api/sessions/end", json!({"ids": [bob]}))
            .await
            .0,
        403
    );
    assert_eq!(
        post(&g, "hrboss", "/api/sessions/end", json!({"ids": [bob]}))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&g, "ann", "/api/sessions/end", json!({"ids": [bob]}))
            .await
            .0,
        404
    );
    for who in ["viewer", "hrboss", "ann"] {
        assert_eq!(
            post(&g, who, "/api/reload", json!({})).await.0,
            403,
            "{who}"
        );
    }
    // The own role ends its own session.
    let ann = session_id(&g, "ann", "ann").await;
    let (s, b) = post(
        &g,
        "ann",
        "/api/sessions/end",
        json!({"ids": [ann], "grace_seconds": 0}),
    )
    .await;
    assert_eq!((s, b["ended"][0]["result"].as_str()), (200, Some("ending")));
    assert_eq!(g.in_use("crm").await, 1);

    // A Basic-auth POST whose body a cross-site form could have sent is refused.
    let r = c
        .post(g.admin_url("/api/sessions/end"))
        .basic_auth("admin", Some("secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{{\"ids\":[\"{bob}\"]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(g.in_use("crm").await, 1);
}

/// Issue 13: a domain admin reaches no other domain's sessions through any endpoint, filter
/// or id, and a batch that names one is refused whole.
#[tokio::test]
async fn domain_admins_reach_no_other_domain_through_any_endpoint() {
    let (_up, g) = start(3, "login").await;
    app_login(&g, "/login", "bob").await;
    app_login(&g, "/hr/login", "hal").await;
    let bob = session_id(&g, "admin", "bob").await;
    let hal = session_id(&g, "admin", "hal").await;
    for q in [
        "/api/sessions",
        "/api/sessions?product=crm",
        "/api/sessions?user=bob",
        "/api/sessions?license_type=default",
        "/api/sessions?state=standby",
        "/api/sessions?limit=10",
    ] {
        let (s, list) = get(&g, "hrboss", q).await;
        assert_eq!(s, 200, "{q}");
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .all(|x| x["product"] == "hr"),
            "{q}: {list}"
        );
        assert!(!list.to_string().contains(&bob), "{q}: {list}");
    }
    let (_, usage) = get(&g, "hrboss", "/api/usage").await;
    assert!(
        usage
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["product"] == "hr"),
        "{usage}"
    );
    for q in ["/api/reports", "/api/reports?product=crm"] {
        let (s, rep) = get(&g, "hrboss", q).await;
        assert_eq!(s, 200, "{q}");
        assert!(!rep.to_string().contains("\"crm\""), "{q}: {rep}");
    }
    for path in [
        "/api/sessions/end",
        "/api/sessions/pause",
        "/api/sessions/resume",
    ] {
        let (s, body) = post(&g, "hrboss", path, json!({"ids": [bob]})).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert!(!body.to_string().contains("bob"), "{path}: {body}");
        // A batch naming one of its own and one of another domain's is refused whole.
        let (s, body) = post(&g, "hrboss", path, json!({"ids": [hal, bob]})).await;
        assert!(s == 404 || s == 403, "{path}: {s} {body}");
        assert!(!body.to_string().contains("bob"), "{path}: {body}");
    }
    let (_, all) = get(&g, "admin", "/api/sessions").await;
    assert_eq!(
        users(&all),
        ["bob", "hal"],
        "something was ended or paused: {all}"
    );
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["state"] != "ending" && x["state"] != "paused"));
}

/// Issue 13: list endpoints page their results (`limit`, `cursor`, `x-next-cursor`).
#[tokio::test]
async fn sessions_are_paged_by_limit_and_cursor() {
    let (_up, g) = start(5, "login").await;
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        app_login(&g, "/login", u).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..5 {
        let r = client()
            .get(g.admin_url(&format!("/api/sessions?limit=2{cursor}")))
            .basic_auth("admin", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let next = r
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Value = r.json().await.unwrap();
        let page = page.as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|s| s["user"].as_str().unwrap().to_string()));
        match next {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        ["u1", "u2", "u3", "u4", "u5"],
        "pages lost or repeated a session"
    );
    for bad in ["limit=0", "limit=5000", "cursor=nothex"] {
        let (s, body) = get(&g, "admin", &format!("/api/sessions?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn page_login_cookie_and_csrf() {
    let (_up, g) = start(3, "login").await;
    let c = client();
    // The page sends strangers to its login form.
    let r = c.get(g.admin_url("/")).send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/login")
    );
    let r = c.get(g.admin_url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(r.text().await.unwrap().contains("id=\"login-form\""));
    let r = c
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin&password=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Wrong user name or password"));
    let r = c
        .post(g.admin_url("/login"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    let cookie = page_login(&g, "admin").await;
    let with_cookie =
        |req: reqwest::RequestBuilder, v: &str| req.header("cookie", format!("seatgate_admin={v}"));
    let r = with_cookie(c.get(g.admin_url("/")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("License Usage"));
    // A forged or altered cookie is nobody.
    let r = with_cookie(c.get(g.admin_url("/api/me")), &format!("x{cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let me: Value = with_cookie(c.get(g.admin_url("/api/me")), &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("super"))
    );
    let token = me["csrf_token"].as_str().unwrap().to_string();
    // Another page session's token is no good for this one.
    let other = page_login(&g, "admin").await;
    let other_token: Value = with_cookie(c.get(g.admin_url("/api/me")), &other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_token = other_token["csrf_token"].as_str().unwrap().to_string();
    // Cookie and token rotate on every login (no session fixation): never the same twice.
    assert_ne!(cookie, other);
    assert_ne!(token, other_token);

    app_login(&g, "/login", "ann").await;
    let ann = session_id(&g, "admin", "ann").await;
    let end = |token: Option<&str>| {
        let mut r = with_cookie(c.post(g.admin_url("/api/sessions/end")), &cookie)
            .json(&json!({"ids": [ann], "grace_seconds": 0}));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    assert_eq!(end(None).await.unwrap().status(), 403);
    assert_eq!(end(Some("forged")).await.unwrap().status(), 403);
    assert_eq!(end(Some(&other_token)).await.unwrap().status(), 403);
    assert_eq!(g.in_use("crm").await, 1, "refused POSTs changed nothing");
    let r = end(Some(&token)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(g.in_use("crm").await, 0);
    assert!(audit_has(&g, |l| l["event"] == "end" && l["by"] == "admin").await);

    // Logout needs the token too, and then the cookie is dead.
    let logout = |t: &str| {
        with_cookie(c.post(g.admin_url("/logout")), &cookie)
            .header("x-csrf-token", t)
            .send()
    };
    assert_eq!(logout("forged").await.unwrap().status(), 403);
    let r = logout(&token).await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/login")
    );
    let r = with_cookie(c.get(g.admin_url("/api/me")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = with_cookie(c.get(g.admin_url("/api/me")), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "other page sessions stay");
    assert!(audit_has(&g, |l| l["event"] == "admin_login" && l["admin"] == "admin").await);
    assert!(audit_has(&g, |l| l["event"] == "admin_login_failed").await);
}

#[tokio::test]
async fn owner_pauses_and_resumes_when_a_seat_is_free() {
    let (_up, g) = start(1, "login").await;
    pause_and_resume(&g).await;
}

#[tokio::test]
async fn owner_pauses_and_resumes_on_redis() {
    let prefix = crate::redis::Prefix::new();
    let store = format!(
        "kind: redis\n  redis: {{ url: \"{}\", prefix: \"{}\" }}",
        crate::redis::redis_url(),
        prefix.name
    );
    let (_up, g) = start_on(&store, 1, "login").await;
    pause_and_resume(&g).await;
}

async fn pause_and_resume(g: &Gateway) {
    let ann_sid = app_login(g, "/login", "ann").await;
    let id = session_id(g, "ann", "ann").await;
    // Only the owner pauses: super may end it, but not pause it for her.
    assert_eq!(
        post(g, "admin", "/api/sessions/pause", json!({"ids": [id]}))
            .await
            .0,
        403
    );
    assert_eq!(
        post(g, "viewer", "/api/sessions/pause", json!({"ids": [id]}))
            .await
            .0,
        403
    );
    let (s, b) = post(g, "ann", "/api/sessions/pause", json!({"ids": [id]})).await;
    assert_eq!(
        (s, b["results"][0]["result"].as_str()),
        (200, Some("paused"))
    );
    assert_eq!(g.in_use("crm").await, 0, "a paused session holds no seat");
    let (s, b) = post(g, "ann", "/api/sessions/pause", json!({"ids": [id]})).await;
    assert_eq!(
        (s, b["results"][0]["result"].as_str()),
        (200, Some("already_paused"))
    );
    // Listed for its owner only.
    let (_, mine) = get(g, "ann", "/api/sessions").await;
    assert_eq!(mine[0]["state"], "paused");
    assert_eq!(get(g, "admin", "/api/sessions").await.1, json!([]));
    assert_eq!(
        post(g, "admin", "/api/sessions/end", json!({"ids": [id]}))
            .await
            .0,
        404
    );

    // Someone else takes the free seat; resuming now finds none.
    let bob_sid = app_login(g, "/login", "bob").await;
    let (s, b) = post(g, "ann", "/api/sessions/resume", json!({"ids": [id]})).await;
    assert_eq!((s, b["results"][0]["result"].as_str()), (409, Some("full")));
    let r = g.get_with_sid("/logout", &bob_sid).await;
    assert_eq!(r.status(), 302);
    let (s, b) = post(g, "ann", "/api/sessions/resume", json!({"ids": [id]})).await;
    assert_eq!(
        (s, b["results"][0]["result"].as_str()),
        (200, Some("resumed"))
    );
    assert_eq!(g.in_use("crm").await, 1);
    let r = g.get_with_sid("/home", &ann_sid).await;
    assert_eq!(r.status(), 200, "the resumed session works as before");
    // Paused again, the session's own next request takes a free seat back.
    let (s, _) = post(g, "ann", "/api/sessions/pause", json!({"ids": [id]})).await;
    assert_eq!(s, 200);
    assert_eq!(g.in_use("crm").await, 0);
    let r = g.get_with_sid("/home", &ann_sid).await;
    assert_eq!(r.status(), 200);
    assert_eq!(g.in_use("crm").await, 1);
    assert!(audit_has(g, |l| l["event"] == "pause" && l["user"] == "ann").await);
    let resumes = || {
        audit_lines(g)
            .iter()
            .filter(|l| l["event"] == "resume" && l["user"] == "ann")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(3), || {
            let n = resumes();
            async move { n == 2 }
        })
        .await,
        "resume through the API and by a request are both audited: {}",
        resumes()
    );
}

#[tokio::test]
async fn reports_per_product_and_hour_in_json_and_csv() {
    let (_up, g) = start(1, "login").await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(
            c.get(g.url("/check"))
                .basic_auth("probe", Some("x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let ann = app_login(&g, "/login", "ann").await;
    let r = c
        .post(g.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=bob&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "bob is denied");
    assert_eq!(
        c.get(g.url("/check"))
            .basic_auth("probe", Some("x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app_login(&g, "/hr/login", "hal").await;
    let _ = ann;

    let row = |rep: &Value, product: &str| {
        rep["rows"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r["product"] == product)
            .cloned()
    };
    // The sampler runs every 2 s: poll with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let (ready, rep) = loop {
        let rep = get(&g, "admin", "/api/reports").await.1;
        let ready = row(&rep, "crm").is_some_and(|r| {
            r["denials"] == 1
                && r["checks"] == 3
                && r["user_hours"]["ann"].as_f64().is_some_and(|h| h > 0.0)
        });
        if ready || std::time::Instant::now() > deadline {
            break (ready, rep);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ready, "{rep}");
    let crm = row(&rep, "crm").unwrap();
    assert_eq!(
        (&crm["peak_in_use"], &crm["capacity"], &crm["checks_failed"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert!(crm["hour"].as_str().unwrap().ends_with(":00:00Z"));
    assert!(
        crm["user_hours"].get("bob").is_none(),
        "denied users hold no hours"
    );
    assert!(row(&rep, "hr").is_some());

    // Domain admins see their products only; own admins only their own hours.
    let (_, hr_view) = get(&g, "hrboss", "/api/reports").await;
    assert!(row(&hr_view, "crm").is_none() && row(&hr_view, "hr").is_some());
    let (_, own_view) = get(&g, "ann", "/api/reports?product=hr").await;
    assert_eq!(row(&own_view, "hr").unwrap()["user_hours"], json!({}));

    // An explicit range in RFC 3339 and in unix seconds; CSV.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let from =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(now - 7200))
            .to_string();
    let (s, ranged) = get(
        &g,
        "admin",
        &format!("/api/reports?from={from}&to={}", now + 60),
    )
    .await;
    assert_eq!(s, 200);
    assert!(row(&ranged, "crm").is_some());
    let (s, empty) = get(&g, "admin", "/api/reports?from=0&to=3600").await;
    assert_eq!((s, empty["rows"].clone()), (200, json!([])));
    let r = c
        .get(g.admin_url("/api/reports?format=csv&product=crm"))
        .basic_auth("admin", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "product,hour,peak_in_use,capacity,denials,checks,checks_failed,user,user_hours,\
         peak_queue_length,queue_admitted,median_wait_seconds"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("crm,") && l.contains(",1,1,1,3,1,,")),
        "{csv}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("crm,") && l.contains(",,,,,,ann,")));
    assert!(!csv.contains("hal"));

    for bad in [
        "from=yesterday",
        "from=2024-05-01",
        "to=1&from=2",
        "from=0&to=99999999",
        "format=xml",
        "since=1",
    ] {
        let (s, b) = get(&g, "admin", &format!("/api/reports?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(b["error"].is_string());
    }
}

#[tokio::test]
async fn bad_admin_input_gets_a_clear_4xx() {
    let (_up, g) = start(3, "login").await;
    app_login(&g, "/login", "ann").await;
    app_login(&g, "/login", "bob").await;
    let ann = session_id(&g, "admin", "ann").await;
    let bob = session_id(&g, "admin", "bob").await;
    let c = client();
    let raw = |path: &str, body: Vec<u8>| {
        c.post(g.admin_url(path))
            .basic_auth("admin", Some("secret"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for path in [
        "/api/sessions/end",
        "/api/sessions/pause",
        "/api/sessions/resume",
    ] {
        for (body, want) in [
            (&b"{not json"[..], 400),
            (b"", 400),
            (b"[]", 400),
            (br#"{"ids": []}"#, 400),
            (br#"{"ids": ["zz"]}"#, 400),
            (br#"{"ids": "abc"}"#, 400),
            (br#"{"ids": ["abc"], "bogus": 1}"#, 400),
            (br#"{"ids": ["0123456789abcdef0"]}"#, 400),
            (br#"{"ids": ["00000000000000aa"]}"#, 404),
        ] {
            let r = raw(path, body.to_vec()).await.unwrap();
            assert_eq!(r.status(), want, "{path} {}", String::from_utf8_lossy(body));
            let v: Value = r.json().await.unwrap();
            assert!(v["error"].is_string(), "{path}: {v}");
        }
        let big = format!(r#"{{"ids": ["{ann}"], "pad": "{}"}}"#, "x".repeat(70_000));
        assert_eq!(raw(path, big.into_bytes()).await.unwrap().status(), 413);
    }
    assert_eq!(g.in_use("crm").await, 2, "nothing was ended by bad input");
    let (s, _) = post(
        &g,
        "admin",
        "/api/sessions/end",
        json!({"ids": [ann], "grace_seconds": 100000}),
    )
    .await;
    assert_eq!(s, 400);
    // Ending with notice twice: the second says so per id; ending a gone session is 409.
    let (s, b) = post(&g, "admin", "/api/sessions/end", json!({"ids": [ann]})).await;
    assert_eq!((s, b["ended"][0]["result"].as_str()), (200, Some("ending")));
    let (s, b) = post(&g, "admin", "/api/sessions/end", json!({"ids": [ann, ann]})).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["ended"].as_array().unwrap().len(),
        1,
        "duplicates collapse"
    );
    assert_eq!(b["ended"][0]["result"], "already_ended");
    let (s, _) = post(
        &g,
        "admin",
        "/api/sessions/end",
        json!({"ids": [bob], "grace_seconds": 0}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = post(&g, "admin", "/api/sessions/end", json!({"ids": [bob]})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        post(&g, "admin", "/api/sessions/pause", json!({"ids": [bob]}))
            .await
            .0,
        404
    );

    for q in [
        "usr=ann",
        "state=zombie",
        &format!("user={}", "x".repeat(300)),
    ] {
        let (s, _) = get(&g, "admin", &format!("/api/sessions?{q}")).await;
        assert_eq!(s, 400, "{q}");
    }
    let r = c
        .delete(g.admin_url("/api/sessions"))
        .basic_auth("admin", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let (s, _) = get(&g, "admin", "/api/nothing").await;
    assert_eq!(s, 404);
    let r = c
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=admin&password=secret&pad={}",
            "x".repeat(70_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .get(g.admin_url("/api/me"))
        .header(
            "cookie",
            "seatgate_admin=%%%; seatgate_admin=.; seatgate_admin",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Still healthy after all that.
    assert_eq!(
        c.get(g.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn ending_with_grace_warns_then_refuses_the_cookie_for_good() {
    // `adopt` would let an unknown cookie take a free seat: an ended one must still not.
    let (_up, g) = start(2, "adopt").await;
    let sid = app_login(&g, "/login", "ann").await;
    let id = session_id(&g, "admin", "ann").await;
    let (s, b) = post(
        &g,
        "admin",
        "/api/sessions/end",
        json!({"ids": [id], "grace_seconds": 2}),
    )
    .await;
    assert_eq!((s, b["ended"][0]["result"].as_str()), (200, Some("ending")));
    let home = || {
        client()
            .get(g.url("/home"))
            .header("cookie", format!("SID={sid}"))
            .send()
    };
    // The next page still works and carries the notice.
    let r = home().await.unwrap();
    assert_eq!(r.status(), 200);
    let notice = r.headers()["x-seatgate-notice"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        notice == "session-ending; in=2" || notice == "session-ending; in=1",
        "{notice}"
    );
    // A page the user sees shows it too, as a banner spliced into the app's HTML.
    let page = client()
        .get(g.url("/page"))
        .header("cookie", format!("SID={sid}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Your session will be ended by an administrator in"),
        "{page}"
    );
    let (_, list) = get(&g, "admin", "/api/sessions").await;
    assert_eq!(list[0]["state"], "ending");
    assert_eq!(list[0]["ended_by"], "admin");
    assert_eq!(
        g.in_use("crm").await,
        1,
        "the seat is held during the notice"
    );
    // After the notice: the seat is free and the cookie is answered per `session.expired`,
    // every time (it never adopts a seat again).
    assert!(
        eventually(Duration::from_secs(5), || async {
            g.in_use("crm").await == 0
        })
        .await
    );
    for _ in 0..2 {
        let r = home().await.unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "/login?seatgate_notice=ended");
        let cleared = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("SID=;"));
        assert!(cleared, "the session cookie is cleared");
    }
    assert_eq!(g.in_use("crm").await, 0);
    assert_eq!(get(&g, "admin", "/api/sessions").await.1, json!([]));
    assert!(
        audit_has(&g, |l| l["event"] == "end"
            && l["by"] == "admin"
            && l["grace_seconds"] == 2)
        .await
    );
    assert!(
        audit_has(&g, |l| l["event"] == "release"
            && l["reason"] == "ended"
            && l["by"] == "admin")
        .await
    );
    // The audit log is append-only JSON lines with a gapless sequence and UTC times.
    let lines = audit_lines(&g);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as u64 + 1, "{l}");
        assert!(l["ts"].as_str().unwrap().ends_with('Z'));
    }
    assert!(lines
        .iter()
        .any(|l| l["event"] == "admit" && l["user"] == "ann"));
}

#[tokio::test]
async fn cli_lists_and_ends_sessions_like_lmstat_and_lmremove() {
    let (_up, g) = start(3, "login").await;
    app_login(&g, "/login", "ann").await;
    app_login(&g, "/login", "bob").await;
    let admin = g.admin_url("");
    let cli = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
                .args(&args)
                .env("SEATGATE_ADMIN_PASSWORD", "secret")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (ok, out, err) = cli(args(&["sessions", "list", "--admin", &admin]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, out, _) = cli(args(&[
        "sessions",
        "list",
        "--admin",
        &admin,
        "--for-user",
        "ann",
        "--license-type",
        "default",
    ]))
    .await
    .unwrap();
    assert!(ok);
    let line = out.lines().nth(1).unwrap().to_string();
    assert!(line.contains("ann") && !out.contains("bob"), "{out}");
    let id = line.split_whitespace().next().unwrap().to_string();
    let (ok, out, err) = cli(args(&[
        "sessions", "end", "--admin", &admin, "--grace", "0", &id,
    ]))
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{id} ending")), "{out}");
    assert_eq!(g.in_use("crm").await, 1);
    // Ending it again, or with the wrong password: a clear message and exit 1.
    let (ok, _, err) = cli(args(&["sessions", "end", "--admin", &admin, &id]))
        .await
        .unwrap();
    assert!(!ok && err.contains("HTTP 409"), "{err}");
    let (ok, _, err) = cli(args(&[
        "sessions",
        "list",
        "--admin",
        &admin,
        "--password",
        "wrong",
    ]))
    .await
    .unwrap();
    assert!(!ok && err.contains("HTTP 401"), "{err}");
}

/// Clicks through the page in headless Chromium: log in with the form, filter, select two
/// sessions, confirm in the dialog, and see them gone and their seats free.
#[tokio::test]
async fn license_usage_page_in_chromium() {
    let (_up, g) = start(3, "login").await;
    for u in ["ann", "bob", "cat"] {
        app_login(&g, "/login", u).await;
    }
    let b = Browser::start().await;
    let rows = "return [...document.querySelectorAll('#sessions tbody tr')].map(r => r.dataset.user).sort()";
    b.goto(&g.admin_url("/")).await;
    assert!(b.current_url().await.ends_with("/login"));
    b.type_into("#username", "admin").await;
    b.type_into("#password", "secret").await;
    b.click("#login-submit").await;
    b.wait_for(rows, json!(["ann", "bob", "cat"]), Duration::from_secs(8))
        .await;
    b.wait_for(
        "return document.querySelector('#pools tr[data-product=crm] td.in-use')?.textContent",
        json!("3"),
        Duration::from_secs(8),
    )
    .await;
    assert!(b.text("#me").await.starts_with("admin"));

    // Filter by user ("a" matches ann and cat), pick both, confirm.
    b.type_into("#f-user", "a").await;
    b.wait_for(rows, json!(["ann", "cat"]), Duration::from_secs(8))
        .await;
    b.click("#sessions tr[data-user=ann] input.select").await;
    b.click("#sessions tr[data-user=cat] input.select").await;
    assert_eq!(b.text("#selection").await, "2 selected");
    b.click("#end-selected").await;
    b.wait_for(
        "return document.querySelector('#confirm').open",
        json!(true),
        Duration::from_secs(8),
    )
    .await;
    assert!(b.text("#confirm-text").await.contains("ann, cat"));
    b.click("#grace option[value='0']").await;
    b.click("#confirm-ok").await;
    b.wait_for(rows, json!([]), Duration::from_secs(8)).await;
    assert!(b.text("#status").await.contains("2 session(s) ended"));
    b.click("#f-clear").await;
    b.wait_for(rows, json!(["bob"]), Duration::from_secs(8))
        .await;
    b.wait_for(
        "return document.querySelector('#pools tr[data-product=crm] td.free')?.textContent",
        json!("2"),
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(
        g.in_use("crm").await,
        1,
        "the seats are free per /api/usage"
    );
    // The reports chart is an SVG drawn on the page.
    b.wait_for(
        "return document.querySelector('#chart svg') !== null",
        json!(true),
        Duration::from_secs(8),
    )
    .await;
    b.quit().await;
}
