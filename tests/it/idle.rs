//! Issue 15: idle means the person is away. A real upstream whose page polls a JSON endpoint
//! in the background: with `session.activity.ignore` on that endpoint the seat lapses at
//! `idle_timeout` while the polling goes on, without it the seat is kept (as before); with
//! `idle_by: input` only the heartbeat's input (or a navigation) keeps it, and
//! `idle_warning` answers the heartbeat with the seconds left. Embedded store and Redis; a
//! real Chromium for the script's input and the warning banner.

use crate::browser::Browser;
use crate::harness::{client, eventually, Gateway, PASSWORD};
use crate::redis::{redis_url, Prefix};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use seatgate::domain::now_ms;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The app's page: it polls `/api/poll` every 300 ms, as news and unread counters do, and has
/// a text field a person can type into.
const APP_PAGE: &str = "<!doctype html><html><head><title>app</title></head><body>\
<h1>Inbox</h1><p>Unread: <span id=\"unread\">0</span></p><input id=\"note\" autofocus>\
<script>setInterval(function(){var x=new XMLHttpRequest();x.open('GET','/api/poll');\
x.onload=function(){document.getElementById('unread').textContent=JSON.parse(x.responseText).unread};\
x.send()},300)</script></body></html>";

/// A legacy app that polls: `POST /login` sets `SID`, `/app` is the polling page,
/// `/api/poll` its JSON endpoint (counted), `/static/logo.png` an image, anything else JSON.
struct App {
    addr: SocketAddr,
    polls: Arc<AtomicU64>,
}

async fn app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let counted = polls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let polls = counted.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, polls.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    App { addr, polls }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    polls: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let body = req.into_body().collect().await?.to_bytes();
    let r = Response::builder();
    let r = match (method.as_str(), path.as_str()) {
        ("POST", "/login") => {
            let ok = form_urlencoded::parse(&body).any(|(k, v)| k == "password" && v == PASSWORD);
            if ok {
                let sid = format!("{:x}", rand::random::<u64>());
                r.status(302)
                    .header("location", "/app")
                    .header("set-cookie", format!("SID={sid}; Path=/; HttpOnly"))
                    .body(Full::new(Bytes::new()))
            } else {
                r.status(401)
                    .body(Full::new(Bytes::from_static(b"wrong password")))
            }
        }
        (_, "/logout") => r
            .status(302)
            .header("location", "/login")
            .header("set-cookie", "SID=; Path=/; Max-Age=0")
            .body(Full::new(Bytes::new())),
        ("GET", "/login") => {
            r.header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<html><body>login</body></html>",
                )))
        }
        ("GET", "/app") => r
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(APP_PAGE.as_bytes()))),
        ("GET", "/api/poll") => {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            r.header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!("{{\"unread\":{}}}", n % 7))))
        }
        ("GET", "/static/logo.png") => r
            .header("content-type", "image/png")
            .body(Full::new(Bytes::from_static(b"\x89PNG\r\n\x1a\n"))),
        _ => r
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"ok\":true}"))),
    };
    Ok(r.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

const CONFIG: &str = r#"
listen: "{listen}"
admin:
  listen: "{admin}"
  users:
    - { name: admin, password_hash: "{admin_hash}", role: super }
store:
STORE
  sweep_interval: 100ms
  flush_interval: 100ms
products:
  - name: crm
    upstream: "{upstream}"
    session:
      cookie: SID
      idle_timeout: {idle}
      max_lifetime: 12h
SESSION
      expired: login
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats: 5
"#;

#[derive(Clone, Copy)]
enum Store {
    Embedded,
    Redis,
}

async fn start(app: &App, store: Store, idle: &str, session: &str) -> (Gateway, Option<Prefix>) {
    let (store, prefix) = match store {
        Store::Embedded => (
            "  kind: embedded\n  path: \"{dir}/seats.redb\"".to_string(),
            None,
        ),
        Store::Redis => {
            let url = redis_url();
            let prefix = Prefix::on(&url);
            let s = format!(
                "  kind: redis\n  redis: {{ url: \"{url}\", prefix: \"{}\" }}",
                prefix.name
            );
            (s, Some(prefix))
        }
    };
    let yaml = CONFIG.replace("STORE", &store).replace("SESSION", session);
    let vars = [
        ("upstream", app.addr.to_string()),
        ("idle", idle.to_string()),
    ];
    (Gateway::start(&yaml, &vars).await, prefix)
}

async fn login(g: &Gateway, user: &str) -> String {
    let r = client()
        .post(g.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "login {user}");
    crate::harness::set_cookie(&r, "SID").expect("session cookie")
}

/// A request as the page's scripts make it (`Sec-Fetch-Mode: cors`), or as a person's click
/// on a link does (`navigate`).
async fn get(g: &Gateway, sid: &str, path: &str, navigate: bool) -> reqwest::Response {
    let mode = if navigate { "navigate" } else { "cors" };
    client()
        .get(g.url(path))
        .header("cookie", format!("SID={sid}"))
        .header("sec-fetch-mode", mode)
        .send()
        .await
        .unwrap()
}

async fn beat(g: &Gateway, sid: &str, input: bool) -> reqwest::Response {
    let q = if input { "?input=1" } else { "" };
    client()
        .post(g.url(&format!("/.seatgate/heartbeat{q}")))
        .header("cookie", format!("SID={sid}"))
        .send()
        .await
        .unwrap()
}

async fn session_of(g: &Gateway, user: &str) -> Option<Value> {
    g.sessions().await.into_iter().find(|s| s["user"] == user)
}

fn ms(v: &Value) -> u128 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    humantime::parse_rfc3339(s)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The page polls every 200 ms (`/api/poll`, and its logo) from login until the seat is gone:
/// how long after the last activity it went, and how many polls were served meanwhile.
async fn poll_until_gone(g: &Gateway, sid: &str, within: Duration) -> Option<(Duration, u64)> {
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < within {
        let r = get(g, sid, "/api/poll", false).await;
        if r.status() != 200 {
            // The seat is gone: the gateway sends the poll to the login page.
            assert_eq!(r.status(), 302, "a poll of a lapsed seat");
            return Some((start.elapsed(), served));
        }
        served += 1;
        assert_eq!(get(g, sid, "/static/logo.png", false).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn ignored_polling_lapses_at_idle_timeout(store: Store) {
    let app = app().await;
    let (g, _prefix) = start(
        &app,
        store,
        "2s",
        "      activity:\n        ignore:\n          - { path_prefix: /api/poll }\n          - { content_type: image/ }",
    )
    .await;
    let sid = login(&g, "ann").await;
    assert_eq!(get(&g, &sid, "/app", true).await.status(), 200);
    // A JSON call matches the image entry's request side only: activity once the response
    // says it is JSON. The idle timer runs from here.
    let r = get(&g, &sid, "/api/save", false).await;
    assert_eq!(r.status(), 200);
    let (took, served) = poll_until_gone(&g, &sid, Duration::from_secs(6))
        .await
        .expect("the seat was kept by ignored polling");
    assert!(served >= 6, "the polls were served meanwhile: {served}");
    // idle_timeout (2 s) from the last activity, give or take a sweep and a poll period.
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(3200),
        "{took:?}"
    );
    assert!(
        idle_releases_reach(&g, 1.0).await,
        "{}",
        g.releases("idle").await
    );
    let ignored = g
        .metric(r#"seatgate_requests_ignored_total{product="crm"}"#)
        .await;
    assert!(
        ignored >= 2.0 * served as f64,
        "ignored {ignored}, served {served}"
    );
    assert!(app.polls.load(Ordering::SeqCst) >= served);
}

async fn listed_times_say_who_is_away(store: Store) {
    let app = app().await;
    let (g, _prefix) = start(
        &app,
        store,
        "1h",
        "      activity:\n        ignore:\n          - { path_prefix: /api/poll }",
    )
    .await;
    let sid = login(&g, "ann").await;
    assert_eq!(get(&g, &sid, "/app", true).await.status(), 200);
    // Time that must pass, not a wait for an event: the polls come 300 ms after the page, so
    // the two timestamps the assertion compares are 250 ms apart or more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert_eq!(get(&g, &sid, "/api/poll", false).await.status(), 200);
    }
    // Written by the next flush (100 ms), Redis' cache hits included.
    assert!(
        eventually(Duration::from_secs(3), || async {
            let s = session_of(&g, "ann").await.unwrap();
            s["last_request"].is_string() && ms(&s["last_request"]) >= ms(&s["last_activity"]) + 250
        })
        .await,
        "last_request follows the polls, last_activity does not: {:?}",
        session_of(&g, "ann").await
    );
    let s = session_of(&g, "ann").await.unwrap();
    assert!(s["last_input"].is_null(), "no input reported: {s}");
}

#[tokio::test]
async fn ignored_polling_lapses_at_idle_timeout_embedded() {
    ignored_polling_lapses_at_idle_timeout(Store::Embedded).await;
}

#[tokio::test]
async fn ignored_polling_lapses_at_idle_timeout_redis() {
    ignored_polling_lapses_at_idle_timeout(Store::Redis).await;
}

#[tokio::test]
async fn listed_times_say_who_is_away_embedded() {
    listed_times_say_who_is_away(Store::Embedded).await;
}

#[tokio::test]
async fn listed_times_say_who_is_away_redis() {
    listed_times_say_who_is_away(Store::Redis).await;
}

/// Today's behaviour, documented: without `session.activity` every request is activity, so a
/// page that polls keeps its seat for as long as it is open.
#[tokio::test]
async fn polling_without_ignore_keeps_the_seat() {
    let app = app().await;
    let (g, _prefix) = start(&app, Store::Embedded, "1s", "").await;
    let sid = login(&g, "ann").await;
    assert_eq!(get(&g, &sid, "/app", true).await.status(), 200);
    assert_eq!(
        poll_until_gone(&g, &sid, Duration::from_millis(2500)).await,
        None,
        "polling kept the seat past idle_timeout"
    );
    assert!(session_of(&g, "ann").await.is_some());
    assert_eq!(g.releases("idle").await, 0.0);
    assert_eq!(
        g.metric(r#"seatgate_requests_ignored_total{product="crm"}"#)
            .await,
        0.0
    );
}

const INPUT: &str = "      presence_timeout: 3s\n      idle_by: input\n      idle_warning: 2s\n      activity:\n        ignore:\n          - { path_prefix: /api/poll }";

/// `idle_by: input` without a browser: three sessions beat every 500 ms while their pages
/// poll. Ann's beats report input: she stays past idle_timeout. Bob's never do: warned, then
/// gone for `idle`. Cat is warned and answers with input ("Stay signed in", then work): the
/// warning goes and her seat stays past the end she was warned of.
async fn input_decides(store: Store) {
    let app = app().await;
    let (g, _prefix) = start(&app, store, "4s", INPUT).await;
    let (ann, bob, cat) = (
        login(&g, "ann").await,
        login(&g, "bob").await,
        login(&g, "cat").await,
    );
    for sid in [&ann, &bob, &cat] {
        assert_eq!(get(&g, sid, "/app", true).await.status(), 200);
    }
    let start = Instant::now();
    let (mut bob_warned, mut bob_gone, mut cat_warned, mut cat_stayed) = (None, None, None, None);
    while start.elapsed() < Duration::from_millis(6500) {
        let r = beat(&g, &ann, true).await;
        assert_eq!(r.status(), 204, "ann at {:?}", start.elapsed());
        assert!(
            r.headers().get("x-seatgate-idle").is_none(),
            "ann is never warned"
        );
        for sid in [&ann, &bob, &cat] {
            let _ = get(&g, sid, "/api/poll", false).await;
        }
        if bob_gone.is_none() {
            let r = beat(&g, &bob, false).await;
            match r.status().as_u16() {
                204 => {
                    if let Some(v) = r.headers().get("x-seatgate-idle") {
                        let left: u64 = v.to_str().unwrap().parse().unwrap();
                        assert!((1..=2).contains(&left), "{left}");
                        bob_warned.get_or_insert(start.elapsed());
                    }
                }
                410 => bob_gone = Some(start.elapsed()),
                s => panic!("bob's beat: {s}"),
            }
        }
        // Warned, cat answers ("Stay signed in") and is back at work from then on.
        let r = beat(&g, &cat, cat_warned.is_some()).await;
        assert_eq!(r.status(), 204, "cat at {:?}", start.elapsed());
        if r.headers().contains_key("x-seatgate-idle") {
            assert!(
                cat_warned.is_none(),
                "cat is warned once, her input ends it"
            );
            cat_warned = Some(start.elapsed());
        } else if cat_warned.is_some() && cat_stayed.is_none() {
            cat_stayed = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warned = bob_warned.expect("bob was warned");
    let gone = bob_gone.expect("bob's seat lapsed while his page polled and beat");
    assert!(
        warned < gone && warned >= Duration::from_millis(1500),
        "{warned:?} {gone:?}"
    );
    // idle_timeout (4 s) from the page load, within a beat and a sweep.
    assert!(gone < Duration::from_millis(5200), "{gone:?}");
    assert!(cat_warned.is_some() && cat_stayed.is_some());
    assert!(session_of(&g, "ann").await.is_some());
    assert!(
        session_of(&g, "cat").await.is_some(),
        "cat stayed signed in"
    );
    assert!(session_of(&g, "bob").await.is_none());
    assert!(g.releases("idle").await >= 1.0);
    assert_eq!(
        g.releases("presence").await,
        0.0,
        "bob's page was open: idle, not presence"
    );
    assert_eq!(
        g.metric(r#"seatgate_idle_warnings_total{product="crm"}"#)
            .await,
        2.0,
        "bob and cat, once each"
    );
    let a = session_of(&g, "ann").await.unwrap();
    assert!(ms(&a["last_input"]) > ms(&a["started_at"]) + 5000, "{a}");
    // A heartbeat claiming input for an ended session changes nothing: 410 as ever.
    assert_eq!(beat(&g, &bob, true).await.status(), 410);
    assert!(session_of(&g, "bob").await.is_none());
    assert_eq!(get(&g, &bob, "/app", true).await.status(), 302);
}

#[tokio::test]
async fn input_decides_embedded() {
    input_decides(Store::Embedded).await;
}

#[tokio::test]
async fn input_decides_redis() {
    input_decides(Store::Redis).await;
}

/// Under `idle_by: input` a navigation (a link, a form post) is activity; the page's own
/// calls are not, even to paths no entry ignores.
#[tokio::test]
async fn navigation_is_activity_background_calls_are_not() {
    let app = app().await;
    let (g, _prefix) = start(&app, Store::Embedded, "1h", INPUT).await;
    let sid = login(&g, "ann").await;
    let at = |s: &Value, k: &str| ms(&s[k]);
    assert_eq!(get(&g, &sid, "/app", true).await.status(), 200);
    let before = session_of(&g, "ann").await.unwrap();
    // Time that must pass: the background calls' timestamps differ from the page's, so an
    // unchanged last_activity means they were not activity.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(&g, &sid, "/api/other", false).await.status(), 200);
    let r = client()
        .post(g.url("/api/save"))
        .header("cookie", format!("SID={sid}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(2), || async {
            let s = session_of(&g, "ann").await.unwrap();
            s["last_request"].is_string() && at(&s, "last_request") > at(&before, "last_activity")
        })
        .await
    );
    let s = session_of(&g, "ann").await.unwrap();
    assert_eq!(at(&s, "last_activity"), at(&before, "last_activity"));
    // A form post by a person navigates.
    let r = client()
        .post(g.url("/records"))
        .header("cookie", format!("SID={sid}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(2), || async {
            let s = session_of(&g, "ann").await.unwrap();
            at(&s, "last_activity") > at(&before, "last_activity")
        })
        .await,
        "a form post is activity"
    );
    assert_eq!(
        g.metric(r#"seatgate_requests_ignored_total{product="crm"}"#)
            .await,
        2.0
    );
}

/// Whether `seatgate_seat_releases_total{reason="idle"}` reaches `n`: a lapsed seat stops
/// counting (and listing) at once, its release is counted when the sweep runs.
async fn idle_releases_reach(g: &Gateway, n: f64) -> bool {
    eventually(Duration::from_secs(2), || async {
        g.releases("idle").await == n
    })
    .await
}

// ------------------------------------------------------------------ real browsers

/// Logs in from the browser with a real form post; the app sends it to its polling page.
async fn open_app(b: &Browser, g: &Gateway, user: &str) {
    b.goto(&g.url("/login")).await;
    b.execute(
        "var f=document.createElement('form');f.method='POST';f.action='/login';\
         for (var k of ['username','password']) {var i=document.createElement('input');\
         i.name=k;i.value=arguments[k=='username'?0:1];f.appendChild(i);}\
         document.body.appendChild(f);f.submit();",
        vec![user.into(), PASSWORD.into()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.current_url().await.ends_with("/app") {
        assert!(Instant::now() < deadline, "login did not reach the app");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn banner(b: &Browser) -> Option<String> {
    let v = b
        .execute(
            "var n=document.querySelector('[data-seatgate-idle]');return n?n.textContent:null;",
            vec![],
        )
        .await;
    v.as_str().map(String::from)
}

/// Two Chromium windows on the polling page, `idle_by: input`, idle_timeout 12 s, warning 6 s
/// (long enough that a warning seen late on a loaded machine can still be clicked in time).
/// Ann types a key every second and keeps her seat past idle_timeout. Bob does nothing: the
/// banner appears before the end, and its "Stay signed in" keeps his seat; then, left alone
/// again, he loses it idle_timeout after that click's input, not a moment before or after.
#[tokio::test]
async fn browser_input_keeps_the_seat_the_warning_button_too() {
    let app = app().await;
    let (g, _prefix) = start(
        &app,
        Store::Embedded,
        "12s",
        "      presence_timeout: 3s\n      idle_by: input\n      idle_warning: 6s\n      activity:\n        ignore:\n          - { path_prefix: /api/poll }",
    )
    .await;
    let (typing, away) = tokio::join!(Browser::start(), Browser::start());
    // Both at once: opened one after the other on a loaded machine, the first page could sit
    // idle long enough for its own warning before its user starts typing.
    // Bob's warning is timed from his own last input (his login), not from when both pages
    // were open: under load one browser can take seconds longer than the other.
    let ((), bob_input) = tokio::join!(open_app(&typing, &g, "ann"), async {
        open_app(&away, &g, "bob").await;
        Instant::now()
    });
    let polls_at_start = app.polls.load(Ordering::SeqCst);
    let opened = Instant::now();

    // Bob's banner appears while Ann types.
    let mut warned = None;
    while opened.elapsed() < Duration::from_secs(12) {
        typing.type_into("#note", "a").await;
        if warned.is_none() {
            if let Some(text) = banner(&away).await {
                warned = Some((bob_input.elapsed(), text));
            }
        }
        assert!(banner(&typing).await.is_none(), "ann is typing: no warning");
        if warned.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (at, text) = warned.expect("bob's page shows the idle warning");
    assert!(at >= Duration::from_millis(3000), "warned at {at:?}");
    // idle_warning (6 s) before the end, counted down by the beats.
    assert!(
        [
            "in 1 seconds",
            "in 2 seconds",
            "in 3 seconds",
            "in 4 seconds",
            "in 5 seconds",
            "in 6 seconds"
        ]
        .iter()
        .any(|t| text.contains(t)),
        "{text}"
    );
    assert!(
        text.contains("You will be signed out in") && text.contains("because you seem to be away"),
        "{text}"
    );
    assert!(
        session_of(&g, "bob").await.is_some(),
        "warned before the end"
    );
    // Judged on the store's own times, not on when this test got round to looking: on a
    // loaded machine one browser call can take seconds, and a look that comes late must not
    // read as a seat lost early (or kept late). The store lists a lapsed seat no more from
    // its deadline on, so an answer "held" to a request sent after an instant proves the seat
    // held at that instant.
    let bob_before = session_of(&g, "bob").await.expect("warned before the end");
    assert!(
        bob_before["last_input"].is_null(),
        "bob gave no input: {bob_before}"
    );
    let first_end = ms(&bob_before["last_activity"]) + 12_000;
    let before_click = u128::from(now_ms());
    away.click("[data-seatgate-idle] button").await;
    let clicked = u128::from(now_ms());
    assert!(
        eventually(Duration::from_secs(3), || async {
            banner(&away).await.is_none()
        })
        .await,
        "the banner goes once the button was pressed"
    );

    // Ann types on; bob's seat is looked at until it is gone, each look timed from before
    // its request went out.
    let mut held_at = Vec::new();
    let mut last = bob_before;
    let gone_at = loop {
        typing.type_into("#note", "b").await;
        assert!(
            session_of(&g, "ann").await.is_some(),
            "typing keeps the seat"
        );
        let sent = u128::from(now_ms());
        match session_of(&g, "bob").await {
            Some(s) => {
                held_at.push(sent);
                last = s;
            }
            None => break sent,
        }
        assert!(
            u128::from(now_ms()) < clicked + 25_000,
            "bob's seat outlived the click by 25 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Pressing the button is the only input bob's page reported.
    assert!(
        last["last_input"].is_string(),
        "the button's beat was input: {last}"
    );
    let input = ms(&last["last_input"]);
    assert!(
        input + 100 >= before_click && input <= clicked + 3_000,
        "bob's input at {input}, the click {before_click}..{clicked}"
    );
    let end = input + 12_000;
    assert!(
        held_at.iter().any(|&t| t > first_end + 100),
        "the button kept the seat: bob's seat was to end at {first_end}, it was last seen \
         held at {:?}, gone at {gone_at}; {last}",
        held_at.last()
    );
    assert!(
        held_at.iter().all(|&t| t < end + 200),
        "bob was idle from {input}: his seat ends at {end}, still held at {:?}",
        held_at.last()
    );
    assert!(
        app.polls.load(Ordering::SeqCst) > polls_at_start + 20,
        "the pages polled all along"
    );
    let ann = session_of(&g, "ann").await.unwrap();
    assert!(ann["last_input"].is_string(), "{ann}");
    assert!(
        idle_releases_reach(&g, 1.0).await,
        "{}",
        g.releases("idle").await
    );
    assert_eq!(
        g.releases("presence").await,
        0.0,
        "bob's page beat all along"
    );
    assert!(
        g.metric(r#"seatgate_idle_warnings_total{product="crm"}"#)
            .await
            >= 1.0
    );
    typing.quit().await;
    away.quit().await;
}

/// The License Usage page shows the last input beside the last request, and sorts by it:
/// whoever gave no input at all first, then the oldest input first.
#[tokio::test]
async fn usage_page_shows_last_input_and_sorts_by_it() {
    let app = app().await;
    let (g, _prefix) = start(&app, Store::Embedded, "1h", INPUT).await;
    let (bob, ann) = (login(&g, "bob").await, login(&g, "ann").await);
    let cat = login(&g, "cat").await;
    // bob types first, ann later; cat's page only polls.
    assert_eq!(get(&g, &cat, "/api/poll", false).await.status(), 200);
    assert_eq!(beat(&g, &bob, true).await.status(), 204);
    // Time that must pass: the page shows input times to the second, so ann's is a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(beat(&g, &ann, true).await.status(), 204);
    // Their pages stay open (beats without input), or presence would end them meanwhile.
    let url = g.url("/.seatgate/heartbeat");
    let beating = tokio::spawn(async move {
        loop {
            for sid in [&bob, &ann] {
                let _ = client()
                    .post(&url)
                    .header("cookie", format!("SID={sid}"))
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let b = Browser::start().await;
    b.goto(&g.admin_url("/")).await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", "secret").await;
    b.click("#login-submit").await;
    let rows =
        "return [...document.querySelectorAll('#sessions tbody tr')].map(r => r.dataset.user)";
    b.wait_for(
        &format!("{rows}.sort()"),
        serde_json::json!(["ann", "bob", "cat"]),
        Duration::from_secs(8),
    )
    .await;
    b.click("#f-sort option[value=last_input]").await;
    b.wait_for(
        rows,
        serde_json::json!(["cat", "bob", "ann"]),
        Duration::from_secs(8),
    )
    .await;
    let cell = |user: &str, k: &str| {
        format!(
            "return document.querySelector('#sessions tr[data-user={user}] td.{k}').textContent"
        )
    };
    b.wait_for(
        &cell("cat", "input"),
        serde_json::json!("–"),
        Duration::from_secs(8),
    )
    .await;
    for user in ["ann", "bob"] {
        let input = b.execute(&cell(user, "input"), vec![]).await;
        assert!(
            input.as_str().is_some_and(|t| t.contains(':')),
            "{user}: {input}"
        );
    }
    let request = b.execute(&cell("cat", "request"), vec![]).await;
    assert!(
        request.as_str().is_some_and(|t| t.contains(':')),
        "{request}"
    );
    b.click("#f-clear").await;
    b.quit().await;
    beating.abort();
}

/// The shipped presets carry the idle settings the README recommends for apps that poll.
#[test]
fn presets_say_what_activity_is() {
    let load = |f: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(f);
        seatgate::config::load(&path).unwrap()
    };
    let two_min = Some(Duration::from_secs(120));
    let accucare = load("accucare.yaml");
    let s = &accucare.products[0].session;
    assert_eq!(s.idle_by, seatgate::config::IdleBy::Input);
    assert_eq!(s.idle_warning, two_min);
    assert!(s.ignore[0].content_type.contains(&"image/".to_string()));
    let infor = load("infor-crm.yaml");
    let s = &infor.products[0].session;
    assert_eq!(s.idle_by, seatgate::config::IdleBy::Requests);
    assert_eq!(s.idle_warning, two_min);
    assert!(s.ignore[0].content_type.contains(&"text/css".to_string()));
}

/// `check-config` refuses the bad idle settings the issue names, with the file, key and line.
#[test]
fn check_config_names_bad_idle_settings() {
    let check = |session: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let yaml = format!(
            "listen: 127.0.0.1:8080
admin: {{ listen: 127.0.0.1:9090 }}
store: {{ kind: embedded, path: /tmp/never-opened.redb }}
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session:
      cookie: SID
      idle_timeout: 20m
      max_lifetime: 12h
{session}
    login: {{ path: /login }}
    logout: {{ path: /logout }}
    seats: 5
"
        );
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seatgate"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), text)
    };
    let (code, text) =
        check("      activity:\n        ignore:\n          - { path_prefix: /login }");
    assert_eq!(code, Some(1));
    assert!(
        text.contains("c.yaml: products[0].session.activity.ignore[0].path_prefix (line 13)")
            && text.contains("would match login.path `/login`"),
        "{text}"
    );
    let (code, text) = check("      activity:\n        ignore:\n          - { path_prefix: /logout/all }\n          - { path_prefix: /logout }");
    assert_eq!(code, Some(1));
    assert!(
        text.contains("ignore[1].path_prefix (line 14)") && text.contains("logout.path"),
        "{text}"
    );
    let (code, text) = check("      presence_timeout: 90s\n      activity:\n        ignore:\n          - { path_prefix: /.seatgate/ }");
    assert_eq!(code, Some(1));
    assert!(text.contains("would match the heartbeat"), "{text}");
    let (code, text) = check("      idle_by: input");
    assert_eq!(code, Some(1));
    assert!(
        text.contains(
            "products[0].session.idle_by (line 11): `input` needs session.presence_timeout"
        ),
        "{text}"
    );
    let (code, text) = check("      presence_timeout: 90s\n      idle_by: input\n      idle_warning: 2m\n      activity:\n        ignore:\n          - { path_prefix: /api/poll }");
    assert_eq!((code, text.as_str()), (Some(0), ""));
}

/// Beats every 300 ms claiming input, and nothing else, for 2.5 s: whether the seat outlives
/// its 1.5 s idle timeout.
async fn input_claims_keep(g: &Gateway) -> bool {
    let sid = login(g, "ann").await;
    assert_eq!(get(g, &sid, "/app", true).await.status(), 200);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        if beat(g, &sid, true).await.status() != 204 {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    session_of(g, "ann").await.is_some()
}

/// With `idle_by: requests` and no warning, a heartbeat's input claim is ignored, exactly as
/// before input existed: beats are presence, the seat idles out.
#[tokio::test]
async fn requests_mode_ignores_input_claims() {
    let app = app().await;
    let (g, _prefix) = start(
        &app,
        Store::Embedded,
        "1500ms",
        "      presence_timeout: 3s",
    )
    .await;
    assert!(!input_claims_keep(&g).await, "an input claim kept the seat");
    assert!(
        idle_releases_reach(&g, 1.0).await,
        "{}",
        g.releases("idle").await
    );
}

/// With `idle_by: requests` and `idle_warning`, the warning's button (a beat with input)
/// keeps the seat.
#[tokio::test]
async fn requests_mode_warning_button_keeps_the_seat() {
    let app = app().await;
    let (g, _prefix) = start(
        &app,
        Store::Embedded,
        "1500ms",
        "      presence_timeout: 3s\n      idle_warning: 1s",
    )
    .await;
    assert!(
        input_claims_keep(&g).await,
        "the button did not keep the seat"
    );
    assert_eq!(g.releases("idle").await, 0.0);
}

/// An app whose `GET /ws` upgrades to a silent socket (raw TCP, so the 101 is exactly an app's);
/// `POST /login` sets `SID=ws-user`.
async fn socket_app() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let answer: &[u8] = if head.starts_with(b"POST /login") {
                    b"HTTP/1.1 302 Found\r\nLocation: /app\r\nSet-Cookie: SID=ws-user; Path=/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else if head.starts_with(b"GET /ws") {
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                };
                let _ = c.write_all(answer).await;
                let mut buf = [0u8; 256];
                while c.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    addr
}

/// An open socket keeps its seat (as before), unless `activity.ignore` names it: then it is
/// a background channel like any poll, and the seat lapses at idle_timeout with it open.
#[tokio::test]
async fn an_ignored_socket_does_not_keep_the_seat() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App {
        addr: socket_app().await,
        polls: Arc::default(),
    };
    let (g, _prefix) = start(
        &app,
        Store::Embedded,
        "1s",
        "      activity:\n        ignore:\n          - { path_prefix: /ws }",
    )
    .await;
    assert_eq!(login(&g, "ann").await, "ws-user");
    let mut ws = tokio::net::TcpStream::connect(g.listen).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nCookie: SID=ws-user\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(ws.read(&mut b).await.unwrap(), 1, "closed before the 101");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let opened = Instant::now();
    assert!(
        eventually(Duration::from_secs(4), || async {
            g.in_use("crm").await == 0
        })
        .await,
        "the ignored socket kept the seat"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(700),
        "{:?}",
        opened.elapsed()
    );
    assert!(
        idle_releases_reach(&g, 1.0).await,
        "{}",
        g.releases("idle").await
    );
    drop(ws);
}
