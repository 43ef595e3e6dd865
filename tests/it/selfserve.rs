//! Issue 5: self-service from the denial page, and standby seats, against a real upstream over
//! real sockets, on the embedded store and on Redis.

use crate::harness::*;
use crate::redis::{redis_url, Prefix};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const CFG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
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
      standby_timeout: {standby}
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats: {seats}
    self_service: { token_ttl: {ttl}, hold: {hold} }
  - name: hang
    upstream: "{hang}"
    hosts: [hang.test]
    session: { cookie: HSID, idle_timeout: 20m, max_lifetime: 12h, standby_timeout: {standby} }
    login: { path: /login, method: POST, user: { form_field: username } }
    seats: 1
"#;

enum Store {
    Embedded,
    Redis(Prefix),
}

impl Store {
    fn yaml(&self) -> String {
        match self {
            Store::Embedded => "  kind: embedded\n  path: \"{dir}/seats.redb\"".into(),
            Store::Redis(p) => format!(
                "  kind: redis\n  redis: {{ url: \"{}\", prefix: \"{}\" }}",
                redis_url(),
                p.name
            ),
        }
    }
}

struct Setup {
    seats: u32,
    ttl: &'static str,
    standby: &'static str,
    hold: &'static str,
    hang: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            seats: 1,
            ttl: "2m",
            standby: "60s",
            hold: "60s",
            // Never contacted unless a test routes to it.
            hang: "127.0.0.1:9".into(),
        }
    }
}

async fn start(store: &Store, s: Setup) -> (Upstream, Gateway) {
    let (up, yaml, vars) = setup(store, s).await;
    let g = Gateway::start(&yaml, &vars).await;
    (up, g)
}

type Vars = Vec<(&'static str, String)>;

async fn setup(store: &Store, s: Setup) -> (Upstream, String, Vars) {
    let up = upstream("SID").await;
    let yaml = CFG.replace("{store}", &store.yaml());
    let vars = vec![
        ("upstream", up.addr.to_string()),
        ("seats", s.seats.to_string()),
        ("ttl", s.ttl.to_string()),
        ("standby", s.standby.to_string()),
        ("hold", s.hold.to_string()),
        ("hang", s.hang),
    ];
    (up, yaml, vars)
}

async fn get_home(g: &Gateway, sid: &str) -> reqwest::Response {
    g.get_with_sid("/home", sid).await
}

/// The tokens of the offer's buttons, in page order.
fn tokens(page: &str) -> Vec<String> {
    page.split("name=\"token\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

async fn post_form(g: &Gateway, body: String) -> reqwest::Response {
    client()
        .post(g.url("/.seatgate/self-service"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn post_token(g: &Gateway, token: &str) -> reqwest::Response {
    post_form(g, format!("token={token}")).await
}

/// Logs `user` in and makes a second request, so the seat is active; returns the cookie.
async fn user_in(g: &Gateway, user: &str) -> String {
    let r = login(g, user, PASSWORD, None).await;
    assert_eq!(r.status(), 302);
    let sid = set_cookie(&r, "SID").expect("session cookie");
    assert_eq!(get_home(g, &sid).await.status(), 200);
    sid
}

async fn alice_in(g: &Gateway) -> String {
    user_in(g, "alice").await
}

/// alice holds the only seat and logs in again elsewhere: the offer page, its one token.
async fn offered(g: &Gateway, up: &Upstream) -> String {
    let logins = up.seen.count("/login");
    let r = login(g, "alice", PASSWORD, None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        r.headers().get_all("set-cookie").iter().next().is_none(),
        "the app's cookies must not reach the browser: {:?}",
        r.headers()
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("<strong>1 of 1</strong> seats of <strong>crm</strong> in use"),
        "{body}"
    );
    assert!(body.contains("End this session and continue"), "{body}");
    assert!(
        body.contains("action=\"/.seatgate/self-service\""),
        "{body}"
    );
    assert_eq!(
        up.seen.count("/login"),
        logins + 1,
        "the app checked the password"
    );
    let t = tokens(&body);
    assert_eq!(t.len(), 1, "{body}");
    t[0].clone()
}

async fn self_service_flow(store: Store) {
    let (up, g) = start(&store, Setup::default()).await;
    let first = alice_in(&g).await;
    let token = offered(&g, &up).await;
    // The session the app opened for the second login is logged out there, in the background.
    let logged_out = eventually(Duration::from_secs(5), || async {
        up.seen.count("/logout") == 1
            && up
                .seen
                .last_headers
                .lock()
                .unwrap()
                .get("cookie")
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.contains("SID=s1-") && !c.contains(&first))
                })
    })
    .await;
    assert!(logged_out, "{:?}", up.seen.last_headers.lock().unwrap());
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(
        get_home(&g, &first).await.status(),
        200,
        "offering ends nothing"
    );

    let r = post_token(&g, &token).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/login?seatgate_notice=self_service"
    );
    assert!(r.text().await.unwrap().contains("<strong>crm</strong>"));
    // The freed seat is held for alice: bob, logging in before she is back, is denied.
    assert_eq!(g.in_use("crm").await, 1);
    let r = login(&g, "bob", PASSWORD, None).await;
    assert_eq!(r.status(), 503, "the held seat went to someone else");
    let r = get_home(&g, &first).await;
    assert_eq!(r.status(), 302, "the ended session is refused");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("seatgate_notice=ended"), "{loc}");

    // Alice comes back and gets the held seat; replaying the token is refused, ends nothing.
    let again = alice_in(&g).await;
    let r = post_token(&g, &token).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("already been used"));
    assert_eq!(get_home(&g, &again).await.status(), 200);
    assert_eq!(g.in_use("crm").await, 1);

    let series =
        |result: &str| format!(r#"seatgate_self_service_total{{product="crm",result="{result}"}}"#);
    assert_eq!(g.metric(&series("offered")).await, 1.0);
    assert_eq!(g.metric(&series("ended")).await, 1.0);
    assert_eq!(g.metric(&series("spent")).await, 1.0);
    assert_eq!(g.releases("ended").await, 1.0);
    let audit = g.dir.path().join("audit.jsonl");
    let audited = eventually(Duration::from_secs(3), || async {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines
            .iter()
            .any(|l| l["event"] == "release" && l["reason"] == "ended" && l["by"] == "alice")
            && lines.iter().any(|l| {
                l["event"] == "self_service_end" && l["who"] == "alice" && l["held_until"].is_u64()
            })
    })
    .await;
    assert!(
        audited,
        "{}",
        std::fs::read_to_string(&audit).unwrap_or_default()
    );
}

#[tokio::test]
async fn self_service_ends_own_session_then_login_gets_the_seat() {
    self_service_flow(Store::Embedded).await;
}

#[tokio::test]
async fn redis_self_service_ends_own_session_then_login_gets_the_seat() {
    self_service_flow(Store::Redis(Prefix::new())).await;
}

/// A hold nobody comes back for ends on its own after `self_service.hold`.
async fn unused_hold_flow(store: Store) {
    let s = Setup {
        hold: "3s",
        ..Setup::default()
    };
    let (up, g) = start(&store, s).await;
    alice_in(&g).await;
    let token = offered(&g, &up).await;
    assert_eq!(post_token(&g, &token).await.status(), 303);
    let held_at = std::time::Instant::now();
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    // A wrong password of alice's does not cost her the hold.
    assert_eq!(login(&g, "alice", "nope", None).await.status(), 401);
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    let bob_in = eventually(Duration::from_secs(8), || async {
        login(&g, "bob", PASSWORD, None).await.status() == 302
    })
    .await;
    assert!(bob_in, "the unused hold was never released");
    assert!(
        held_at.elapsed() >= Duration::from_millis(2500),
        "released after {:?}, before its 3 s",
        held_at.elapsed()
    );
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(login(&g, "alice", PASSWORD, None).await.status(), 503);
}

#[tokio::test]
async fn self_service_hold_lapses_when_unused() {
    unused_hold_flow(Store::Embedded).await;
}

#[tokio::test]
async fn redis_self_service_hold_lapses_when_unused() {
    unused_hold_flow(Store::Redis(Prefix::new())).await;
}

/// Two replicas on one Redis: a token from one works on the other, once, and the seat it
/// frees waits for the user whichever replica their next login reaches.
#[tokio::test]
async fn redis_self_service_works_across_replicas() {
    let store = Store::Redis(Prefix::new());
    let (up, yaml, vars) = setup(&store, Setup::default()).await;
    let a = Gateway::start(&yaml, &vars).await;
    let b = Gateway::start(&yaml, &vars).await;
    let first = alice_in(&a).await;
    let token = offered(&a, &up).await;
    let r = post_token(&b, &token).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    // a trusts its session cache for up to a second.
    let ended = eventually(Duration::from_secs(3), || async {
        get_home(&a, &first).await.status() == 302
    })
    .await;
    assert!(ended, "ended on b, seen on a");
    let r = post_token(&a, &token).await;
    assert_eq!(r.status(), 410, "spent on b, so spent on a");
    assert!(r.text().await.unwrap().contains("already been used"));
    // The hold made on b keeps bob out on either replica and lets alice in on a.
    assert_eq!(login(&a, "bob", PASSWORD, None).await.status(), 503);
    assert_eq!(login(&b, "bob", PASSWORD, None).await.status(), 503);
    let again = alice_in(&a).await;
    assert_eq!(get_home(&b, &again).await.status(), 200);
    assert_eq!(a.in_use("crm").await, 1);
    // A token b never saw signed is still refused there.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let r = post_token(&b, &forged).await;
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[tokio::test]
async fn no_offer_for_a_wrong_password_or_a_user_without_sessions() {
    let (up, g) = start(&Store::Embedded, Setup::default()).await;
    let first = alice_in(&g).await;
    // Wrong password: the app is asked and its own answer comes back; no seat, no logout.
    let r = login(&g, "alice", "nope", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "wrong password");
    assert_eq!(up.seen.count("/login"), 2);
    // Bob holds nothing: the plain denial with the counts, and the app never sees it.
    let r = login(&g, "bob", PASSWORD, None).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("All 1 concurrent license of <strong>crm</strong>"),
        "{body}"
    );
    assert!(body.contains("<strong>1 of 1</strong> seats"), "{body}");
    assert!(!body.contains("<form"), "{body}");
    assert_eq!(up.seen.count("/login"), 2);
    // A span in which nothing may happen: no background logout reaches the app.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.seen.count("/logout"), 0);
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(get_home(&g, &first).await.status(), 200);
    let m = g.metrics().await;
    for line in [
        r#"seatgate_logins_total{client="default",product="crm",result="failed"} 1"#,
        r#"seatgate_logins_total{client="default",product="crm",result="denied"} 1"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
}

#[tokio::test]
async fn bad_self_service_requests_get_4xx_and_end_nothing() {
    let s = Setup {
        ttl: "1s",
        ..Setup::default()
    };
    let (up, g) = start(&Store::Embedded, s).await;
    let first = alice_in(&g).await;
    let token = offered(&g, &up).await;
    let c = client();
    let r = c
        .get(g.url("/.seatgate/self-service"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c
        .post(g.url("/.seatgate/self-service"))
        .header("content-type", "application/json")
        .body(format!("{{\"token\":\"{token}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(post_form(&g, "other=1".into()).await.status(), 400);
    assert_eq!(post_form(&g, "x".repeat(10_000)).await.status(), 413);
    let r = post_token(&g, "garbage").await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("No session of <strong>crm</strong> was ended"),
        "{page}"
    );
    // Another seat id in the payload under the old signature.
    let (payload, mac) = token.split_once('.').unwrap();
    let mut p = payload.as_bytes().to_vec();
    p[10] = if p[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{mac}", String::from_utf8(p).unwrap());
    assert_eq!(post_token(&g, &tampered).await.status(), 403);
    // Not spent by the refusals above, but expired by now.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = post_token(&g, &token).await;
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap().contains("expired"));
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(get_home(&g, &first).await.status(), 200);
    assert_eq!(up.seen.count("/.seatgate/self-service"), 0);
    assert_eq!(g.releases("ended").await, 0.0);
}

/// An upstream that accepts logins and never answers: a login stays in flight.
async fn hanging_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            held.push(sock);
        }
    });
    (addr, h)
}

async fn usage_of(g: &Gateway, product: &str) -> serde_json::Value {
    g.usage()
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["product"] == product)
        .cloned()
        .unwrap()
}

async fn standby_flow(store: Store) {
    let (hang, hang_task) = hanging_upstream().await;
    let s = Setup {
        seats: 2,
        standby: "2s",
        hang,
        ..Setup::default()
    };
    let (_up, g) = start(&store, s).await;
    // alice logs in and never comes back; bob makes a second request.
    let alice = set_cookie(&login(&g, "alice", PASSWORD, None).await, "SID").unwrap();
    let bob = user_in(&g, "bob").await;
    // A login whose app never answers holds a reserved seat meanwhile.
    let gw = g.url("/login");
    let inflight = tokio::spawn(async move {
        let _ = client()
            .post(gw)
            .header("host", "hang.test")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=carol&password=pw")
            .send()
            .await;
    });
    let list = g.sessions().await;
    let state_of = |user: &str| {
        list.iter()
            .find(|s| s["user"] == user)
            .map(|s| s["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of("alice").as_deref(), Some("standby"), "{list:?}");
    assert_eq!(state_of("bob").as_deref(), Some("active"), "{list:?}");
    assert_eq!(
        g.metric(r#"seatgate_seats_in_use{product="crm",state="standby"}"#)
            .await,
        1.0
    );
    assert_eq!(
        g.metric(r#"seatgate_seats_in_use{product="crm",state="active"}"#)
            .await,
        1.0
    );
    let reserved = eventually(Duration::from_secs(1), || async {
        let u = usage_of(&g, "hang").await;
        u["in_use"] == 1
            && u["standby"] == 1
            && g.metric(r#"seatgate_seats_in_use{product="hang",state="standby"}"#)
                .await
                == 1.0
    })
    .await;
    assert!(reserved, "{}", usage_of(&g, "hang").await);

    // After standby_timeout both standby seats are freed, the active one stays.
    let freed = eventually(Duration::from_secs(4), || async {
        g.releases("standby").await == 1.0 && usage_of(&g, "hang").await["in_use"] == 0
    })
    .await;
    assert!(freed, "{}", g.metrics().await);
    assert!(
        !inflight.is_finished(),
        "the hanging login is still in flight"
    );
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(
        g.metric(r#"seatgate_seats_in_use{product="crm",state="standby"}"#)
            .await,
        0.0
    );
    let r = get_home(&g, &alice).await;
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.contains("seatgate_notice=standby"), "{loc}");
    assert_eq!(get_home(&g, &bob).await.status(), 200);
    let list = g.sessions().await;
    assert_eq!(list.len(), 1, "{list:?}");
    inflight.abort();
    hang_task.abort();
}

#[tokio::test]
async fn standby_seats_are_listed_then_freed() {
    standby_flow(Store::Embedded).await;
}

#[tokio::test]
async fn redis_standby_seats_are_listed_then_freed() {
    standby_flow(Store::Redis(Prefix::new())).await;
}
