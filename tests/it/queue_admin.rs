//! Issue 12, the operators' side of the waiting line, over real sockets: `GET /api/queue`,
//! removing a ticket (API and the License Usage page in Chromium), the queue metrics
//! (promtool-clean), the audit events and the report's columns.

use crate::browser::Browser;
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// One product with a one-seat pool and a waiting line; a super admin with control, one who
/// may only look, and an `own` admin named like a queued user. Every admin's password is
/// `secret`.
const CONFIG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  session_ttl: 1h
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
    - { name: viewer, password_hash: "{admin_hash}", role: super, permission: view }
    - { name: bob, password_hash: "{admin_hash}", role: own }
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
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats: 1
    queue: { enabled: true, hold: 60s, abandon_after: 60s, max_wait: 30m }
"#;

/// The name cat types at the login: markup, so every place that shows it must escape it.
const CAT: &str = "Cat <b>&amp;";

const EMBEDDED: &str = "kind: embedded\n  path: \"{dir}/seats.redb\"";

async fn start() -> (Upstream, Gateway) {
    start_on(EMBEDDED).await
}

async fn start_on(store: &str) -> (Upstream, Gateway) {
    let up = upstream("SID").await;
    // Into the text first: the store's own `{dir}` is filled in with the others.
    let yaml = CONFIG.replace("{store}", store);
    let g = Gateway::start(&yaml, &[("upstream", up.addr.to_string())]).await;
    (up, g)
}

/// A form login as `user` (form-encoded here); its answer.
async fn login_as(g: &Gateway, user: &str) -> reqwest::Response {
    let user: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
    login(g, &user, PASSWORD, None).await
}

/// Logs `user` in while the seat is taken: the waiting page, and its ticket cookie's value.
async fn queue_up(g: &Gateway, user: &str) -> String {
    let r = login_as(g, user).await;
    let ticket = set_cookie(&r, "seatgate_queue");
    assert_eq!(r.status(), 200, "{user} should get the waiting page");
    assert_eq!(r.headers()["cache-control"], "no-store");
    ticket.unwrap_or_else(|| panic!("{user} got no ticket"))
}

async fn api(
    g: &Gateway,
    method: reqwest::Method,
    path: &str,
    who: Option<&str>,
) -> reqwest::Response {
    let mut req = client().request(method, g.admin_url(path));
    if let Some(w) = who {
        req = req.basic_auth(w, Some("secret"));
    }
    req.send().await.unwrap()
}

async fn queue_as(g: &Gateway, who: &str) -> Vec<Value> {
    let r = api(g, reqwest::Method::GET, "/api/queue", Some(who)).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// What the ticket's own page is told when it polls (`…/.seatgate/queue`); a poll too soon
/// after the last (429) is asked again once its Retry-After allows.
async fn poll(g: &Gateway, ticket: &str) -> Value {
    for _ in 0..5 {
        let r = g
            .get_with_cookie("/.seatgate/queue", &format!("seatgate_queue={ticket}"))
            .await;
        if r.status() == 429 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            continue;
        }
        assert_eq!(r.status(), 200);
        return r.json().await.unwrap();
    }
    panic!("polls kept getting 429");
}

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn audit_lines(g: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(g.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Three users on a one-seat pool: the two refused are listed in order with their names as
/// typed; an admin removes the first, whose page is then told `expired`, and the metrics,
/// the audit log and the report say so.
#[tokio::test]
async fn operators_list_and_remove_tickets() {
    let (_up, g) = start().await;
    list_and_remove(&g).await;
}

/// The same on Redis: the line every replica shares is the one listed and removed from.
#[tokio::test]
async fn operators_list_and_remove_tickets_on_redis() {
    let prefix = crate::redis::Prefix::new();
    let store = format!(
        "kind: redis\n  redis: {{ url: \"{}\", prefix: \"{}\" }}",
        crate::redis::redis_url(),
        prefix.name
    );
    let (_up, g) = start_on(&store).await;
    list_and_remove(&g).await;
}

async fn list_and_remove(g: &Gateway) {
    // Before anything queued: the series are there at 0, and promtool accepts the text.
    let text = g.metrics().await;
    for r in ["admitted", "abandoned", "expired", "removed", "full"] {
        let s = format!(r#"seatgate_queue_total{{product="crm",result="{r}"}}"#);
        assert_eq!(series(&text, &s), Some(0.0), "{s}");
    }
    assert_eq!(
        series(&text, r#"seatgate_queue_wait_seconds_count{product="crm"}"#),
        Some(0.0)
    );
    assert_eq!(
        series(
            &text,
            r#"seatgate_queue_length{pool="default",product="crm"}"#
        ),
        Some(0.0)
    );
    promtool_check(&text);

    let ann = login_as(g, "ann").await;
    assert!(set_cookie(&ann, "SID").is_some(), "ann takes the seat");
    let bob = queue_up(g, "bob").await;
    let cat = queue_up(g, CAT).await;

    let line = queue_as(g, "admin").await;
    assert_eq!(line.len(), 2, "{line:?}");
    let users: Vec<&str> = line.iter().map(|t| t["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["bob", CAT]);
    let positions: Vec<u64> = line
        .iter()
        .map(|t| t["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2]);
    for t in &line {
        assert_eq!(
            (&t["product"], &t["pool"]),
            (&json!("crm"), &json!("default"))
        );
        assert_eq!(t["state"], "waiting");
        assert_eq!(t["ready_until"], Value::Null);
        assert!(t["joined_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert!(t["client"].is_string());
        // The listing names tickets by their public id, never by their cookie.
        let id = t["id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(!bob.contains(id) && !cat.contains(id));
    }
    let listed = serde_json::to_string(&line).unwrap();
    assert!(!listed.contains(&bob) && !listed.contains(&cat));
    let (bob_id, cat_id) = (
        line[0]["id"].as_str().unwrap().to_string(),
        line[1]["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        g.metric(r#"seatgate_queue_length{pool="default",product="crm"}"#)
            .await,
        2.0
    );
    // An `own` admin sees only the tickets of its own name.
    let own = queue_as(g, "bob").await;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["id"], bob_id.as_str());
    let filtered = api(
        g,
        reqwest::Method::GET,
        "/api/queue?product=hr",
        Some("admin"),
    )
    .await;
    assert_eq!(filtered.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(
        api(g, reqwest::Method::GET, "/api/queue?sort=x", Some("admin"))
            .await
            .status(),
        400
    );

    // Bad and unauthorised removals change nothing.
    use reqwest::Method;
    let del = |id: &str| format!("/api/queue/{id}");
    assert_eq!(
        api(g, Method::DELETE, &del(&bob_id), None).await.status(),
        401
    );
    assert_eq!(api(g, Method::GET, "/api/queue", None).await.status(), 401);
    let viewer = api(g, Method::DELETE, &del(&bob_id), Some("viewer")).await;
    assert_eq!(viewer.status(), 403);
    assert_eq!(
        api(g, Method::DELETE, &del("not-an-id"), Some("admin"))
            .await
            .status(),
        400
    );
    assert_eq!(
        api(g, Method::DELETE, &del("0000000000000001"), Some("admin"))
            .await
            .status(),
        404
    );
    // `own` bob may not see cat's ticket: unknown to him, not forbidden.
    assert_eq!(
        api(g, Method::DELETE, &del(&cat_id), Some("bob"))
            .await
            .status(),
        404
    );
    assert_eq!(
        api(g, Method::PUT, &del(&bob_id), Some("admin"))
            .await
            .status(),
        405
    );
    assert_eq!(queue_as(g, "admin").await.len(), 2);

    let r = api(g, Method::DELETE, &del(&bob_id), Some("admin")).await;
    assert_eq!(r.status(), 200);
    let removed: Value = r.json().await.unwrap();
    assert_eq!(removed["removed"]["id"], bob_id.as_str());
    assert_eq!(removed["removed"]["user"], "bob");
    // Gone from the listing, cat moves up; a second removal is a 404.
    let line = queue_as(g, "admin").await;
    assert_eq!(line.len(), 1);
    assert_eq!(
        (&line[0]["id"], &line[0]["position"]),
        (&json!(cat_id), &json!(1))
    );
    assert_eq!(
        api(g, Method::DELETE, &del(&bob_id), Some("admin"))
            .await
            .status(),
        404
    );
    // Bob's page is told its wait is over; cat's still waits.
    assert_eq!(poll(g, &bob).await["state"], "expired");
    let cat_status = poll(g, &cat).await;
    assert_eq!(
        (&cat_status["state"], &cat_status["position"]),
        (&json!("waiting"), &json!(1))
    );

    let text = g.metrics().await;
    assert_eq!(
        series(
            &text,
            r#"seatgate_queue_total{product="crm",result="removed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            r#"seatgate_queue_length{pool="default",product="crm"}"#
        ),
        Some(1.0)
    );
    promtool_check(&text);

    // With the page's cookie, a DELETE needs the page's CSRF token like any POST.
    let r = client()
        .post(g.admin_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=admin&password=secret")
        .send()
        .await
        .unwrap();
    let page = format!(
        "seatgate_admin={}",
        set_cookie(&r, "seatgate_admin").unwrap()
    );
    let me: Value = client()
        .get(g.admin_url("/api/me"))
        .header("cookie", &page)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = me["csrf_token"].as_str().unwrap().to_string();
    let by_page = |csrf: Option<&str>| {
        let mut req = client()
            .delete(g.admin_url(&del(&cat_id)))
            .header("cookie", &page);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    assert_eq!(by_page(None).await.unwrap().status(), 403);
    assert_eq!(by_page(Some("forged")).await.unwrap().status(), 403);
    assert_eq!(queue_as(g, "admin").await.len(), 1, "cat is still in line");
    assert_eq!(by_page(Some(&token)).await.unwrap().status(), 200);
    assert_eq!(queue_as(g, "admin").await, Vec::<Value>::new());

    // The audit log: two joins, bob's leave (removed) and who removed him.
    let found = eventually(Duration::from_secs(5), || async {
        audit_lines(g).iter().any(|l| l["event"] == "queue_remove")
    })
    .await;
    assert!(found, "no queue_remove line");
    let lines = audit_lines(g);
    let joins: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "queue_join")
        .collect();
    assert_eq!(joins.len(), 2);
    assert_eq!(
        (&joins[0]["user"], &joins[0]["ticket"], &joins[0]["pool"]),
        (&json!("bob"), &json!(bob_id), &json!("default"))
    );
    assert_eq!(joins[1]["user"], CAT);
    let leave = lines
        .iter()
        .find(|l| l["event"] == "queue_leave" && l["ticket"] == bob_id.as_str())
        .expect("bob's queue_leave");
    assert_eq!(
        (&leave["ticket"], &leave["result"]),
        (&json!(bob_id), &json!("removed"))
    );
    let remove = lines.iter().find(|l| l["event"] == "queue_remove").unwrap();
    assert_eq!(
        (&remove["by"], &remove["ticket"]),
        (&json!("admin"), &json!(bob_id))
    );
    assert!(!std::fs::read_to_string(g.dir.path().join("audit.jsonl"))
        .unwrap()
        .contains(&bob));

    // The report's hour shows the line at its longest (2).
    let ok = eventually(Duration::from_secs(10), || async {
        let rep = g.admin_json("/api/reports?product=crm").await;
        rep["rows"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["peak_queue_length"] == 2))
    })
    .await;
    assert!(ok, "{}", g.admin_json("/api/reports?product=crm").await);
}

/// The seat freed for the head of the line is taken by its login: the wait reaches the
/// histogram, `admitted` the counter, `queue_leave` the audit log with its wait, and the
/// report its median.
#[tokio::test]
async fn an_admission_from_the_line_is_timed() {
    let (_up, g) = start().await;
    let ann = set_cookie(&login_as(&g, "ann").await, "SID").unwrap();
    let bob = queue_up(&g, "bob").await;
    // Ann logs out: the seat is held for bob, whose page turns ready.
    let out = g.get_with_sid("/logout", &ann).await;
    assert!(out.status().is_success() || out.status().is_redirection());
    let ready = eventually(Duration::from_secs(10), || async {
        poll(&g, &bob).await["state"] == "ready"
    })
    .await;
    assert!(ready, "bob's ticket never turned ready");
    let line = queue_as(&g, "admin").await;
    assert_eq!(line[0]["state"], "ready");
    assert!(line[0]["ready_until"].is_string());
    let r = login(&g, "bob", PASSWORD, Some(&format!("seatgate_queue={bob}"))).await;
    assert!(set_cookie(&r, "SID").is_some(), "bob takes the held seat");
    assert_eq!(queue_as(&g, "admin").await, Vec::<Value>::new());

    let text = g.metrics().await;
    assert_eq!(
        series(
            &text,
            r#"seatgate_queue_total{product="crm",result="admitted"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(&text, r#"seatgate_queue_wait_seconds_count{product="crm"}"#),
        Some(1.0)
    );
    promtool_check(&text);
    let timed = eventually(Duration::from_secs(5), || async {
        audit_lines(&g).iter().any(|l| {
            l["event"] == "queue_leave"
                && l["result"] == "admitted"
                && l["wait_seconds"].as_f64().is_some_and(|w| w >= 0.0)
        })
    })
    .await;
    assert!(timed, "no timed queue_leave");
    assert!(audit_lines(&g).iter().any(|l| l["event"] == "queue_ready"));
    let ok = eventually(Duration::from_secs(10), || async {
        let rep = g.admin_json("/api/reports?product=crm").await;
        rep["rows"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["queue_admitted"] == 1 && r["median_wait_seconds"].is_number())
        })
    })
    .await;
    assert!(ok, "{}", g.admin_json("/api/reports?product=crm").await);
}

/// The License Usage page shows the line (the user as typed, as text) and its Remove button
/// takes a ticket out after the confirmation.
#[tokio::test]
async fn the_usage_page_shows_the_line_and_removes_a_ticket() {
    let (_up, g) = start().await;
    assert!(set_cookie(&login_as(&g, "ann").await, "SID").is_some());
    let _bob = queue_up(&g, "bob").await;
    let cat = queue_up(&g, CAT).await;
    let b = Browser::start().await;
    b.goto(&g.admin_url("/")).await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", "secret").await;
    b.click("#login-submit").await;
    let users = "return [...document.querySelectorAll('#queue tbody tr')].map(r => r.querySelector('td.user').textContent)";
    b.wait_for(users, json!(["bob", CAT]), Duration::from_secs(10))
        .await;
    // Markup typed as a name stays text.
    b.wait_for(
        "return document.querySelectorAll('#queue tbody b').length",
        json!(0),
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(
        "return [...document.querySelectorAll('#queue tbody td.position')].map(t => t.textContent)",
        json!(["1", "2"]),
        Duration::from_secs(10),
    )
    .await;
    b.wait_for(
        "return document.querySelector('#pools tr[data-product=crm] td.waiting')?.textContent",
        json!("2"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        b.execute("return document.querySelector('#no-queue').hidden", vec![])
            .await
            == json!(true)
    );

    let bob_id = queue_as(&g, "admin").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.click(&format!("#queue tr[data-id='{bob_id}'] button.remove"))
        .await;
    b.accept_alert().await;
    b.wait_for(users, json!([CAT]), Duration::from_secs(10))
        .await;
    assert!(b.text("#status").await.contains("removed from the line"));
    let line = queue_as(&g, "admin").await;
    assert_eq!(line.len(), 1);
    assert_eq!(line[0]["user"], CAT);
    assert_eq!(poll(&g, &cat).await["position"], 1);
    assert_eq!(
        g.metric(r#"seatgate_queue_total{product="crm",result="removed"}"#)
            .await,
        1.0
    );
    b.quit().await;
}
