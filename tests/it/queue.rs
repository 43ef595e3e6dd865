//! Issue 12: the waiting line, through the real binary, against a real upstream app over real
//! sockets: browsers refused for want of a seat wait in line, the freed seat is held for the
//! head, the head's login takes it; abandonment, lapsed holds, barging, a full line, polling
//! limits, bad tickets, API clients' Retry-After, and one line for two replicas on Redis.

use crate::harness::*;
use crate::redis::{redis_url, Prefix};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
products:
  - name: crm
    upstream: "{upstream}"
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    queue:
      enabled: true
      hold: {hold}
      abandon_after: {abandon}
      max_length: {max_length}
      barging: {barging}
    pools:
      - name: std
        seats: {seats}
        default: true
      - name: gold
        seats: 1
        users: [goldie]
    clients:
      - kind: api
        match: { header: { name: X-Client, value: api } }
        on_full: { status: 429, body: busy }
      - kind: mobile
        match: { path_prefix: /m }
        mode: check
        on_full: { status: 401, body: "no", headers: { Retry-After: "3600" } }
  - name: erp
    upstream: "{upstream}"
    hosts: [erp.test]
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h }
    login: { path: /login, method: POST, user: { form_field: username } }
    seats: 1
    queue: { enabled: true }
"#;

pub struct Opts {
    pub seats: u32,
    pub hold: &'static str,
    pub abandon: &'static str,
    pub max_length: u32,
    pub barging: bool,
    pub redis: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            seats: 1,
            hold: "60s",
            abandon: "30s",
            max_length: 1000,
            barging: false,
            redis: None,
        }
    }
}

pub fn yaml(o: &Opts) -> String {
    let store = match &o.redis {
        None => "  kind: embedded\n  path: \"{dir}/seats.redb\"".to_string(),
        Some(prefix) => format!(
            "  kind: redis\n  redis: {{ url: \"{}\", prefix: \"{prefix}\" }}",
            redis_url()
        ),
    };
    CFG.replace("{store}", &store)
}

pub fn vars(up: &Upstream, o: &Opts) -> Vec<(&'static str, String)> {
    vec![
        ("upstream", up.addr.to_string()),
        ("seats", o.seats.to_string()),
        ("hold", o.hold.to_string()),
        ("abandon", o.abandon.to_string()),
        ("max_length", o.max_length.to_string()),
        ("barging", o.barging.to_string()),
    ]
}

pub async fn start(o: Opts) -> (Upstream, Gateway) {
    let up = upstream("SID").await;
    let g = Gateway::start(&yaml(&o), &vars(&up, &o)).await;
    (up, g)
}

/// A login as `user` carrying `ticket` (the `seatgate_queue` cookie value), if any.
pub async fn login_with(
    g: &Gateway,
    user: &str,
    password: &str,
    ticket: Option<&str>,
) -> reqwest::Response {
    login(
        g,
        user,
        password,
        ticket.map(|t| format!("seatgate_queue={t}")).as_deref(),
    )
    .await
}

/// Logs `user` in; the session cookie.
pub async fn user_in(g: &Gateway, user: &str) -> String {
    let r = login(g, user, PASSWORD, None).await;
    assert_eq!(r.status(), 302, "{user} logs in");
    set_cookie(&r, "SID").expect("session cookie")
}

/// A waiting page as a test reads it.
pub struct Page {
    pub status: u16,
    pub ticket: Option<String>,
    pub set_cookie: Vec<String>,
    pub cache_control: Option<String>,
    pub csp: Option<String>,
    pub body: String,
}

impl Page {
    pub async fn of(r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let ticket = set_cookie(&r, "seatgate_queue");
        let set_cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        let (cache_control, csp) = (header("cache-control"), header("content-security-policy"));
        let body = r.text().await.unwrap();
        Page {
            status,
            ticket,
            set_cookie,
            cache_control,
            csp,
            body,
        }
    }

    /// The position the page shows.
    pub fn position(&self) -> Option<u32> {
        let (_, rest) = self.body.split_once("id=\"pos\">")?;
        rest.split('<').next()?.parse().ok()
    }
}

/// `user` is refused a seat and joins the line: the waiting page, with its ticket.
pub async fn join(g: &Gateway, user: &str) -> (Page, String) {
    let p = Page::of(login(g, user, PASSWORD, None).await).await;
    assert_eq!(p.status, 200, "{user} gets the waiting page: {}", p.body);
    let t = p.ticket.clone().expect("a ticket cookie");
    (p, t)
}

/// One poll of the line with `ticket` (raw `Cookie` value when `cookie` is given instead).
pub async fn poll_raw(g: &Gateway, cookie: &str) -> (u16, Option<u64>, Value, Option<String>) {
    let r = client()
        .get(g.url("/.seatgate/queue"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let cc = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, retry, json, cc)
}

/// The ticket's status, waiting out a `429` (polls within a second of the last one).
pub async fn status(g: &Gateway, ticket: &str) -> Value {
    loop {
        let (code, retry, json, _) = poll_raw(g, &format!("seatgate_queue={ticket}")).await;
        match code {
            200 => return json,
            429 => tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await,
            other => panic!("poll answered {other}: {json}"),
        }
    }
}

/// Polls until the ticket's status satisfies `f`; the last status seen.
pub async fn until(
    g: &Gateway,
    ticket: &str,
    within: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(g, ticket).await;
        if f(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("")
}

async fn logout(g: &Gateway, sid: &str) {
    let r = g.get_with_sid("/logout", sid).await;
    assert!(r.status().is_redirection(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_wait_in_order_and_the_freed_seat_is_held_for_the_first() {
    let (_up, g) = start(Opts::default()).await;
    let alice = user_in(&g, "alice").await;
    let mut tickets = Vec::new();
    for (i, user) in ["bob", "cat", "dan"].into_iter().enumerate() {
        let (page, t) = join(&g, user).await;
        assert_eq!(page.position(), Some(i as u32 + 1), "{user}: {}", page.body);
        assert_eq!(page.cache_control.as_deref(), Some("no-store"));
        let cookie = page
            .set_cookie
            .iter()
            .find(|c| c.starts_with("seatgate_queue="))
            .unwrap();
        for attr in ["Path=/", "HttpOnly", "SameSite=Lax"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        assert!(page.body.contains("crm"), "{}", page.body);
        assert!(page.body.contains("Estimated wait"), "{}", page.body);
        // The page's own script is allowed by hash, nothing else.
        let csp = page.csp.unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        tickets.push(t);
    }
    assert_eq!(g.in_use("crm").await, 1);
    for (i, t) in tickets.iter().enumerate() {
        let s = status(&g, t).await;
        assert_eq!(state(&s), "waiting", "{s}");
        assert_eq!(s["position"], i as u64 + 1, "{s}");
        assert_eq!(s["length"], 3, "{s}");
        assert_eq!(s["product"], "crm", "{s}");
    }
    // A second login with a waiting ticket keeps its place, never a second ticket.
    let again = Page::of(login_with(&g, "cat", PASSWORD, Some(&tickets[1])).await).await;
    assert_eq!(
        (again.status, again.position()),
        (200, Some(2)),
        "{}",
        again.body
    );

    logout(&g, &alice).await;
    let bob = until(&g, &tickets[0], Duration::from_secs(10), |s| {
        state(s) == "ready"
    })
    .await;
    assert_eq!(state(&bob), "ready", "{bob}");
    assert!(bob["ready_until"].as_u64().unwrap() > 0, "{bob}");
    // The held seat counts: nobody else takes it, a newcomer joins the back.
    let (eve, _) = join(&g, "eve").await;
    assert_eq!(eve.position(), Some(4), "{}", eve.body);
    let cat = Page::of(login_with(&g, "cat", PASSWORD, Some(&tickets[1])).await).await;
    assert_eq!(cat.status, 200, "cat is still waiting: {}", cat.body);

    // A wrong password with the ready ticket: the app's own refusal, no seat, hold kept.
    let wrong = login_with(&g, "bob", "nope", Some(&tickets[0])).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.text().await.unwrap(), "wrong password");
    assert_eq!(state(&status(&g, &tickets[0]).await), "ready");
    let (eve2, _) = join(&g, "eve").await;
    assert!(eve2.position().unwrap() >= 4, "{}", eve2.body);

    // The right password takes the held seat; the ticket is deleted and leaves the line.
    let ok = login_with(&g, "bob", PASSWORD, Some(&tickets[0])).await;
    assert_eq!(ok.status(), 302);
    let cleared: Vec<_> = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("seatgate_queue="))
        .collect();
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(cleared[0].contains("Max-Age=0"), "{cleared:?}");
    let bob_sid = set_cookie(&ok, "SID").unwrap();
    assert_eq!(g.get_with_sid("/home", &bob_sid).await.status(), 200);
    assert_eq!(g.in_use("crm").await, 1);
    assert_eq!(state(&status(&g, &tickets[0]).await), "expired");
    let cat = status(&g, &tickets[1]).await;
    assert_eq!(
        (state(&cat), cat["position"].as_u64()),
        ("waiting", Some(1)),
        "{cat}"
    );
    let dan = status(&g, &tickets[2]).await;
    assert_eq!(dan["position"], 2, "{dan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_tickets_leave_and_a_lapsed_hold_passes_on() {
    // Short, but with room for a loaded machine: pages poll every 1.1 s.
    let (_up, g) = start(Opts {
        hold: "2s",
        abandon: "4s",
        ..Opts::default()
    })
    .await;
    let g = Arc::new(g);
    let alice = user_in(&g, "alice").await;
    let (_, bob) = join(&g, "bob").await;
    let (_, cat) = join(&g, "cat").await;
    let (_, dan) = join(&g, "dan").await;
    // Cat and dan keep their pages open; bob closed his.
    let keep = |t: String| {
        let g = g.clone();
        tokio::spawn(async move {
            loop {
                let _ = poll_raw(&g, &format!("seatgate_queue={t}")).await;
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
        })
    };
    let dan_page = keep(dan.clone());
    let cat_page = keep(cat.clone());
    let s = until(&g, &cat, Duration::from_secs(10), |s| s["position"] == 1).await;
    assert_eq!(
        (state(&s), s["position"].as_u64()),
        ("waiting", Some(1)),
        "{s}"
    );
    assert_eq!(state(&status(&g, &bob).await), "expired", "bob abandoned");
    // The seat frees, cat's is held, and cat never logs in: after the hold dan gets it. Each
    // ticket is polled by one loop at a time (two would take turns being too soon); `until`
    // polls often enough to keep a ticket in line.
    cat_page.abort();
    logout(&g, &alice).await;
    let s = until(&g, &cat, Duration::from_secs(10), |s| state(s) == "ready").await;
    assert_eq!(state(&s), "ready", "{s}");
    dan_page.abort();
    let s = until(&g, &dan, Duration::from_secs(10), |s| state(s) == "ready").await;
    assert_eq!(state(&s), "ready", "{s}");
    assert_eq!(state(&status(&g, &cat).await), "expired");
    let r = login_with(&g, "dan", PASSWORD, Some(&dan)).await;
    assert_eq!(r.status(), 302);
    assert_eq!(g.in_use("crm").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn barging_lets_a_newcomer_through_and_without_it_the_line_comes_first() {
    for barging in [true, false] {
        let (_up, g) = start(Opts {
            barging,
            ..Opts::default()
        })
        .await;
        let alice = user_in(&g, "alice").await;
        let (_, bob) = join(&g, "bob").await;
        logout(&g, &alice).await;
        // Bob's page has not polled since the seat freed.
        let r = login(&g, "eve", PASSWORD, None).await;
        if barging {
            assert_eq!(r.status(), 302, "barging: the newcomer goes through");
            assert_eq!(state(&status(&g, &bob).await), "waiting");
        } else {
            let p = Page::of(r).await;
            assert_eq!((p.status, p.position()), (200, Some(2)), "{}", p.body);
            let s = until(&g, &bob, Duration::from_secs(10), |s| state(s) == "ready").await;
            assert_eq!(state(&s), "ready", "{s}");
            assert_eq!(
                login_with(&g, "bob", PASSWORD, Some(&bob)).await.status(),
                302
            );
        }
        assert_eq!(g.in_use("crm").await, 1, "barging: {barging}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_line_is_the_plain_denial_with_retry_after() {
    let (_up, g) = start(Opts {
        max_length: 1,
        ..Opts::default()
    })
    .await;
    let _alice = user_in(&g, "alice").await;
    let _ = join(&g, "bob").await;
    let r = login(&g, "cat", PASSWORD, None).await;
    assert_eq!(r.status(), 503);
    assert!(set_cookie(&r, "seatgate_queue").is_none());
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(r.text().await.unwrap().contains("All licenses are in use"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polls_are_get_and_at_most_one_a_second() {
    let (_up, g) = start(Opts::default()).await;
    let _alice = user_in(&g, "alice").await;
    let (_, bob) = join(&g, "bob").await;
    let cookie = format!("seatgate_queue={bob}");
    // Polls within a second of each other (sent together): all but one are 429 with
    // Retry-After, and every answer is uncacheable.
    let (a, b, c) = tokio::join!(
        poll_raw(&g, &cookie),
        poll_raw(&g, &cookie),
        poll_raw(&g, &cookie)
    );
    let mut codes = Vec::new();
    for (code, retry, _, cc) in [a, b, c] {
        assert_eq!(cc.as_deref(), Some("no-store"));
        if code == 429 {
            assert!(retry.is_some_and(|r| r >= 1), "{retry:?}");
        }
        codes.push(code);
    }
    assert!(
        codes.iter().filter(|c| **c == 429).count() >= 2,
        "{codes:?}"
    );
    let r = client()
        .post(g.url("/.seatgate/queue"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    // The page without script (meta refresh) answers HTML.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = client()
        .get(g.url("/.seatgate/queue?view=page"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("http-equiv=\"refresh\""), "{body}");
    assert!(body.contains("id=\"pos\">1<"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tickets_are_newcomers_never_errors() {
    let (_up, g) = start(Opts::default()).await;
    let _alice = user_in(&g, "alice").await;
    let (_, bob) = join(&g, "bob").await;
    // Another product's ticket (erp's line is its own).
    let erp_login = |user: &str| {
        client()
            .post(g.url("/login"))
            .header("host", "erp.test")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={user}&password={PASSWORD}"))
            .send()
    };
    let r = erp_login("erin").await.unwrap();
    assert_eq!(r.status(), 302);
    let _erp = set_cookie(&r, "SID").unwrap();
    let r = erp_login("fred").await.unwrap();
    let erp_ticket = Page::of(r).await.ticket.expect("erp's waiting page");
    let bob_random = bob.split_once('.').unwrap().1;
    let forged = [
        "garbage".to_string(),
        "%%%;;".to_string(),
        format!("7374642e.{}", "0".repeat(32)),
        // The right shape and pool, but a value the line never gave: replaced.
        format!("737464.{}", "0".repeat(32)),
        format!("737464.{bob_random}x"),
        format!("676f6c64.{bob_random}"),
        format!("{}.{bob_random}", "61".repeat(300)),
        erp_ticket,
    ];
    for (i, t) in forged.iter().enumerate() {
        let (code, _, json, _) = poll_raw(&g, &format!("seatgate_queue={t}")).await;
        assert_eq!((code, state(&json)), (200, "expired"), "{t}: {json}");
        let p = Page::of(login_with(&g, &format!("new{i}"), PASSWORD, Some(t)).await).await;
        assert_eq!(p.status, 200, "{t}: {}", p.body);
        assert_eq!(p.position(), Some(i as u32 + 2), "{t}");
        assert_ne!(p.ticket.as_deref(), Some(t.as_str()), "a fresh ticket");
    }
    // Without any cookie: expired, not an error.
    let (code, _, json, _) = poll_raw(&g, "x=1").await;
    assert_eq!((code, state(&json)), (200, "expired"), "{json}");
    assert_eq!(g.in_use("crm").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_clients_do_not_queue_and_get_retry_after() {
    let (_up, g) = start(Opts::default()).await;
    let alice = user_in(&g, "alice").await;
    // Her first request takes the seat out of standby: it now lapses 20 minutes after it.
    let r = client()
        .get(g.url("/home"))
        .header("cookie", format!("SID={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(g.url("/login"))
        .header("x-client", "api")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=bot&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(set_cookie(&r, "seatgate_queue").is_none());
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The one seat idles out 20 minutes after alice's login: that is when to come back, not a
    // fixed guess.
    assert!((1190..=1200).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.text().await.unwrap(), "busy");
    // A failed availability check says the same, over the Retry-After its on_full configures.
    let r = client()
        .get(g.url("/m/avail"))
        .header("authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let values: Vec<_> = r.headers().get_all("retry-after").iter().collect();
    assert_eq!(values.len(), 1, "one Retry-After: {values:?}");
    let retry: u64 = values[0].to_str().unwrap().parse().unwrap();
    assert!((1190..=1200).contains(&retry), "check Retry-After {retry}");
    assert_eq!(r.text().await.unwrap(), "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_redis_share_one_line() {
    let prefix = Prefix::new();
    let o = Opts {
        redis: Some(prefix.name.clone()),
        ..Opts::default()
    };
    let up = upstream("SID").await;
    let a = Gateway::start(&yaml(&o), &vars(&up, &o)).await;
    let b = Gateway::start(&yaml(&o), &vars(&up, &o)).await;
    let alice = user_in(&a, "alice").await;
    let (pa, ta) = join(&a, "bob").await;
    let (pb, tb) = join(&b, "cat").await;
    assert_eq!((pa.position(), pb.position()), (Some(1), Some(2)));
    // Either replica answers for either ticket.
    assert_eq!(status(&b, &ta).await["position"], 1);
    assert_eq!(status(&a, &tb).await["position"], 2);
    logout(&a, &alice).await;
    let s = until(&b, &ta, Duration::from_secs(10), |s| state(s) == "ready").await;
    assert_eq!(state(&s), "ready", "{s}");
    // The seat held for bob is bob's on the other replica too.
    let eve = Page::of(login(&a, "eve", PASSWORD, None).await).await;
    assert_eq!((eve.status, eve.position()), (200, Some(3)), "{}", eve.body);
    // A wrong password on one replica keeps the hold for the other.
    let wrong = login_with(&a, "bob", "nope", Some(&ta)).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(state(&status(&b, &ta).await), "ready");
    assert_eq!(
        login_with(&b, "bob", PASSWORD, Some(&ta)).await.status(),
        302
    );
    let s = status(&a, &tb).await;
    assert_eq!(s["position"], 1, "{s}");
}

/// Posts the login form from the page the browser is on, as a person would.
const SUBMIT_LOGIN: &str = "const f = document.createElement('form'); f.method = 'post'; \
    f.action = '/login'; for (const [k, v] of [['username', arguments[0]], ['password', arguments[1]]]) \
    { const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); } \
    document.body.appendChild(f); f.submit(); return true;";

/// In headless Chromium: the waiting page turns ready by itself when a seat frees (its own
/// script, allowed by its CSP), and its button leads to the login that takes the held seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_waiting_page_turns_ready_by_itself_in_a_browser() {
    let (_up, g) = start(Opts::default()).await;
    let alice = user_in(&g, "alice").await;
    let b = crate::browser::Browser::start().await;
    b.goto(&g.url("/page")).await;
    b.execute(SUBMIT_LOGIN, vec!["bob".into(), PASSWORD.into()])
        .await;
    let st = "return document.getElementById('seatgate-queue')?.dataset.state ?? null";
    b.wait_for(st, "waiting".into(), Duration::from_secs(10))
        .await;
    assert_eq!(b.text("#pos").await, "1");
    // The loop runs in a worker (not throttled in a hidden tab), allowed by the page's CSP.
    let poller = "return document.getElementById('seatgate-queue').dataset.poller ?? null";
    b.wait_for(poller, "worker".into(), Duration::from_secs(5))
        .await;
    // The page polls: its place is kept (and the script runs, or the state never changes).
    logout(&g, &alice).await;
    b.wait_for(st, "ready".into(), Duration::from_secs(15))
        .await;
    assert_eq!(
        b.execute("return document.title", vec![]).await,
        "A seat is ready for you"
    );
    assert!(b
        .text("#r")
        .await
        .contains("A seat of crm is being held for you until"));
    assert_eq!(g.in_use("crm").await, 1, "the held seat counts");
    assert_eq!(
        b.execute(poller, vec![]).await,
        "worker",
        "told by the worker"
    );
    b.click("#go").await;
    b.wait_for(
        "return location.pathname",
        "/login".into(),
        Duration::from_secs(10),
    )
    .await;
    b.execute(SUBMIT_LOGIN, vec!["bob".into(), PASSWORD.into()])
        .await;
    b.wait_for(
        "return location.pathname",
        "/home".into(),
        Duration::from_secs(10),
    )
    .await;
    let users: Vec<_> = g
        .sessions()
        .await
        .iter()
        .filter_map(|s| s["user"].as_str().map(String::from))
        .collect();
    assert_eq!(users, ["bob"]);
    b.quit().await;
}

/// Reload turns a pool's line on and off: logins refused after it wait in line, or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_turns_the_line_on_and_off() {
    let up = upstream("SID").await;
    let o = Opts::default();
    let off = yaml(&o).replace("      enabled: true\n", "      enabled: false\n");
    let g = Gateway::start(&off, &vars(&up, &o)).await;
    let _alice = user_in(&g, "alice").await;
    assert_eq!(login(&g, "bob", PASSWORD, None).await.status(), 503);
    let hup = |text: &str| {
        std::fs::write(&g.config_path, text).unwrap();
        let pid = g.child.as_ref().unwrap().id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    let on = std::fs::read_to_string(&g.config_path)
        .unwrap()
        .replace("      enabled: false\n", "      enabled: true\n");
    hup(&on);
    let joined = eventually(Duration::from_secs(10), || async {
        login(&g, "cat", PASSWORD, None).await.status() == 200
    })
    .await;
    assert!(joined, "{}", g.log());
    hup(&on.replace("      enabled: true\n", "      enabled: false\n"));
    let plain = eventually(Duration::from_secs(10), || async {
        login(&g, "dan", PASSWORD, None).await.status() == 503
    })
    .await;
    assert!(plain, "{}", g.log());
}
