//! The gateway's own HTML pages: the pool-full page (with the self-service offer), the
//! self-service outcomes and the app-unreachable page. Every value put into a page is escaped
//! here; callers pass text.

use super::Canned;
use crate::domain::{Full, FullReason, Millis, QueueStatus, TicketState};
use crate::gate::OfferedSession;
use bytes::Bytes;
use http::StatusCode;

use crate::presence::csp::source_hash;
pub use crate::presence::escape_html;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}\
h1{font-size:1.4em}table{border-collapse:collapse;margin:1em 0}td,th{padding:.4em .8em .4em 0;text-align:left;\
vertical-align:top}th{font-weight:600}button{font:inherit;padding:.3em .8em;cursor:pointer}\
.count{font-size:1.1em}.muted{color:#666;font-size:.9em}";

/// A whole HTML page; `title` is text, `body` is already-escaped HTML.
fn html_page(title: &str, body: &str) -> String {
    let title = escape_html(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>{STYLE}</style></head><body><h1>{title}</h1>{body}</body></html>\n"
    )
}

/// ("license", "is") / ("licenses", "are").
fn licenses(n: u32) -> (&'static str, &'static str) {
    if n == 1 {
        ("license", "is")
    } else {
        ("licenses", "are")
    }
}

pub(super) fn denied_page(product: &str, seats: u32) -> String {
    let product = escape_html(product);
    let (plural, verb) = licenses(seats);
    html_page(
        "All licenses are in use",
        &format!(
            "<p>All {seats} concurrent {plural} of <strong>{product}</strong> {verb} in use right now.</p>\
<p>Please try again in a few minutes, or ask a colleague who is done to log out.</p>"
        ),
    )
}

/// "End one of your sessions and continue": only after the app accepted the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<'a> {
    pub user: &'a str,
    /// Where the buttons post (the product's `/.seatgate/self-service`).
    pub action: &'a str,
    pub valid_secs: u64,
    pub sessions: &'a [OfferedSession],
}

/// The built-in denial of one login, with the pool's counts and, when the user may free a seat
/// of their own, the offer to do so. Status and headers come from the client kind's `on_full`.
pub fn full_page(
    base: &Canned,
    product: &str,
    full: &Full,
    offer: Option<&Offer<'_>>,
    now: Millis,
) -> Canned {
    let name = escape_html(product);
    let (in_use, capacity) = (full.in_use, full.capacity);
    let why = match full.reason {
        FullReason::Pool | FullReason::OverflowSpent => format!(
            "<p>All {capacity} concurrent {} of <strong>{name}</strong> {} in use right now.</p>",
            licenses(capacity).0,
            licenses(capacity).1
        ),
        FullReason::UserMax => format!(
            "<p>You already hold as many sessions of <strong>{name}</strong> as one user may.</p>"
        ),
        FullReason::GroupMax => format!(
            "<p>All licenses of <strong>{name}</strong> that your group may use are in use right now.</p>"
        ),
    };
    let mut body = format!(
        "{why}<p class=\"count\"><strong>{in_use} of {capacity}</strong> seats of <strong>{name}</strong> in use.</p>"
    );
    let title = match full.reason {
        FullReason::UserMax => "You have reached your session limit",
        _ => "All licenses are in use",
    };
    match offer.filter(|o| !o.sessions.is_empty()) {
        None => body.push_str(
            "<p>Please try again in a few minutes, or ask a colleague who is done to log out.</p>",
        ),
        Some(o) => {
            let n = o.sessions.len();
            let user = escape_html(o.user);
            let action = escape_html(o.action);
            body.push_str(&format!(
                "<p>You (<strong>{user}</strong>) already have {n} session{} of <strong>{name}</strong>. \
Your new login was checked but not started. To continue here, end one of your own sessions:</p>\
<table><thead><tr><th>Started</th><th>Last activity</th><th>Client / device</th><th></th></tr></thead><tbody>",
                if n == 1 { "" } else { "s" }
            ));
            for s in o.sessions {
                let mut device = escape_html(&s.client);
                if let Some(d) = &s.device {
                    device.push_str(&format!(
                        ", device {}",
                        escape_html(d.get(..8).unwrap_or(d))
                    ));
                }
                if s.this_device {
                    device.push_str(" (this browser)");
                }
                let last = if s.standby {
                    "none since login".to_string()
                } else {
                    when(s.last_activity, now)
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{last}</td><td>{device}</td><td><form method=\"post\" action=\"{action}\">\
<input type=\"hidden\" name=\"token\" value=\"{}\"><button type=\"submit\">End this session and continue</button>\
</form></td></tr>",
                    when(s.started_at, now),
                    escape_html(&s.token),
                ));
            }
            body.push_str(&format!(
                "</tbody></table><p class=\"muted\">Ending a session logs it out wherever it is open; unsaved \
work in it may be lost. You will then be asked to log in again. This choice is valid for {}.</p>",
                duration_words(o.valid_secs)
            ));
        }
    }
    Canned {
        status: base.status,
        headers: base.headers.clone(),
        body: Bytes::from(html_page(title, &body)),
        head: None,
    }
}

/// "2024-05-01 10:22:33 UTC".
fn clock(at: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// "2024-05-01 10:22:33 UTC (3 min ago)".
fn when(at: Millis, now: Millis) -> String {
    let abs = clock(at);
    let ago = now.saturating_sub(at) / 1000;
    let rel = if ago < 5 {
        "just now".to_string()
    } else {
        format!("{} ago", duration_words(ago))
    };
    format!("{abs} ({rel})")
}

fn duration_words(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// A self-service request that cannot be honoured (bad, expired or used token …): a page that
/// says why and links back to the login page.
pub fn self_service_refused(
    status: StatusCode,
    product: &str,
    why: &str,
    login_path: &str,
) -> Canned {
    let body = format!(
        "<p>{}</p><p>No session of <strong>{}</strong> was ended.</p><p><a href=\"{}\">Go to the login page</a></p>",
        escape_html(why),
        escape_html(product),
        escape_html(login_path),
    );
    Canned::html(status, html_page("This choice cannot be used", &body))
}

/// The chosen session is ended (or was already gone): 303 to the login page, with a page for
/// clients that do not follow redirects.
pub fn self_service_done(product: &str, login_path: &str) -> Canned {
    let location = format!(
        "{login_path}{}seatgate_notice=self_service",
        if login_path.contains('?') { '&' } else { '?' }
    );
    let body = format!(
        "<p>Your other session of <strong>{}</strong> has been ended and its license is free.</p>\
<p><a href=\"{}\">Log in again</a> to continue.</p>",
        escape_html(product),
        escape_html(&location),
    );
    Canned::html(StatusCode::SEE_OTHER, html_page("Session ended", &body))
        .header_str(http::header::LOCATION, &location)
}

/// The waiting page's script: polls the ticket's place, and turns the page ready or
/// expired by itself. Fixed text (what it needs comes in `data-` attributes), so its CSP hash
/// is computed once. The polling loop runs in a worker where the browser allows one: browsers
/// throttle a hidden tab's timers (Chromium to once a minute after a while) but not a
/// worker's, and a page that stops polling leaves the line. Without a worker, it runs on the
/// page.
const QUEUE_SCRIPT: &str = r#"(function(){var m=document.getElementById('seatgate-queue');if(!m||!window.fetch)return;
var url=new URL(m.getAttribute('data-poll'),location.href).href,every=+m.getAttribute('data-every')||2000;
function $(i){return document.getElementById(i)}
function eta(s){if(s===null||s===undefined)return 'unknown';if(s<60)return 'about '+s+' s';if(s<3600)return 'about '+Math.ceil(s/60)+' min';return 'about '+Math.floor(s/3600)+' h '+Math.ceil((s%3600)/60)+' min'}
function title(t){document.title=t;$('t').textContent=t}
function show(j){
if(j.state==='waiting'){$('pos').textContent=j.position;$('len').textContent=j.length;$('eta').textContent=eta(j.estimated_wait_seconds);return}
if(j.state==='ready'){title('A seat is ready for you');$('w').hidden=true;$('r').hidden=false;$('until').textContent=new Date(j.ready_until*1000).toLocaleTimeString();m.setAttribute('data-state','ready');return}
title('Your place in line has expired');$('w').hidden=true;$('r').hidden=true;$('x').hidden=false;m.setAttribute('data-state','expired')}
function poller(post,url,every){function later(ms){setTimeout(tick,ms)}
function tick(){fetch(url,{credentials:'same-origin',cache:'no-store',headers:{'Accept':'application/json'}}).then(function(r){
if(r.status===429){later(Math.max((+r.headers.get('Retry-After')||1)*1000,every));return null}
if(!r.ok){later(every*2);return null}
return r.json()}).then(function(j){if(!j)return;post(j);if(j.state!=='expired')later(every)},function(){later(every*2)})}
later(every)}
try{var w=new Worker(URL.createObjectURL(new Blob(['var poller='+poller.toString()+';onmessage=function(e){poller(function(j){postMessage(j)},e.data[0],e.data[1])}'],{type:'text/javascript'})));
w.onmessage=function(e){show(e.data)};w.onerror=function(e){e.preventDefault();w.terminate();m.setAttribute('data-poller','page');poller(show,url,every)};
w.postMessage([url,every]);m.setAttribute('data-poller','worker')}
catch(e){m.setAttribute('data-poller','page');poller(show,url,every)}})();"#;

/// The waiting pages' Content-Security-Policy: only their own script and style, polls to
/// their own origin, nothing framed.
pub fn queue_csp() -> &'static str {
    static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
worker-src blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            source_hash(QUEUE_SCRIPT),
            source_hash(STYLE)
        )
    });
    &CSP
}

/// What a waiting page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InLine<'a> {
    pub product: &'a str,
    /// `None`: the line does not know the ticket (left, or never was).
    pub status: Option<&'a QueueStatus>,
    /// The poll endpoint (`…/.seatgate/queue`).
    pub poll: &'a str,
    /// Where a ready ticket logs in (and an expired one tries again).
    pub login: &'a str,
    pub poll_every: Millis,
    /// `true`: the page without script (`?view=page`), refreshed by `<meta>`; `false`: the
    /// waiting page with its polling script (and the `<meta>` refresh inside `<noscript>`).
    pub refresh_only: bool,
}

fn eta_words(ms: Option<Millis>) -> String {
    match ms {
        None => "unknown".into(),
        Some(ms) => format!("about {}", duration_words(ms.div_ceil(1000))),
    }
}

/// The waiting page: the product, the place in line and the estimated wait, updated by its
/// script (every `poll_every`) until a seat is held for the ticket, then a link back to the
/// login page. Status 200: the browser is being served, not refused.
pub fn waiting_page(w: &InLine<'_>) -> Canned {
    let name = escape_html(w.product);
    let login = escape_html(w.login);
    let page_url = escape_html(&format!("{}?view=page", w.poll));
    let secs = w.poll_every.div_ceil(1000).max(2);
    let refresh = format!("<meta http-equiv=\"refresh\" content=\"{secs};url={page_url}\">");
    let (title, state) = match w.status {
        Some(s) if s.state == TicketState::Ready => ("A seat is ready for you", "ready"),
        Some(_) => ("You are in line for a license", "waiting"),
        None => ("Your place in line has expired", "expired"),
    };
    let (pos, len, eta, until) = match w.status {
        Some(s) => (
            s.position.to_string(),
            s.length.to_string(),
            eta_words(s.estimated_wait),
            s.ready_until.map(clock).unwrap_or_default(),
        ),
        None => (
            String::new(),
            String::new(),
            "unknown".into(),
            String::new(),
        ),
    };
    let hidden = |shown: bool| if shown { "" } else { " hidden" };
    let body = format!(
        "<main id=\"seatgate-queue\" data-poll=\"{poll}\" data-every=\"{every}\" data-state=\"{state}\">\
<h1 id=\"t\">{title}</h1>\
<div id=\"w\"{hw}><p>All licenses of <strong>{name}</strong> are in use right now. You are number \
<strong id=\"pos\">{pos}</strong> in line (<span id=\"len\">{len}</span> waiting).</p>\
<p>Estimated wait: <strong id=\"eta\">{eta}</strong>.</p>\
<p class=\"muted\">Keep this page open: it updates by itself, and a license that frees is held for \
the first in line. Closing it gives up your place.</p></div>\
<div id=\"r\"{hr}><p>A seat of <strong>{name}</strong> is being held for you until \
<strong id=\"until\">{until}</strong>.</p><p><a id=\"go\" href=\"{login}\">Continue to the login \
page</a></p></div>\
<div id=\"x\"{hx}><p>Your place in line for <strong>{name}</strong> has expired (the page was \
closed too long, or a held seat was not used in time).</p><p><a href=\"{login}\">Try again</a></p></div>\
</main>",
        poll = escape_html(w.poll),
        every = w.poll_every,
        hw = hidden(state == "waiting"),
        hr = hidden(state == "ready"),
        hx = hidden(state == "expired"),
    );
    let (head_extra, script) = if w.refresh_only {
        (
            if state == "expired" {
                String::new()
            } else {
                refresh
            },
            String::new(),
        )
    } else {
        (
            format!("<noscript>{refresh}</noscript>"),
            format!("<script>{QUEUE_SCRIPT}</script>"),
        )
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>{head_extra}\
<style>{STYLE}</style></head><body>{body}{script}</body></html>\n"
    );
    Canned::html(StatusCode::OK, html).header(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(queue_csp()),
    )
}

/// The app did not answer a login the gateway checked on the user's behalf.
pub fn app_unreachable(product: &str) -> Canned {
    let body = format!(
        "<p><strong>{}</strong> did not answer. Please try again shortly.</p>",
        escape_html(product)
    );
    Canned::html(
        StatusCode::BAD_GATEWAY,
        html_page("The application is not reachable", &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnFull;

    fn base(product: &str, seats: u32) -> Canned {
        super::super::on_full(&OnFull::builtin(), product, seats)
    }

    fn full(in_use: u32, capacity: u32, reason: FullReason) -> Full {
        Full {
            in_use,
            capacity,
            reason,
        }
    }

    #[test]
    fn full_page_states_counts_and_keeps_status_and_headers() {
        let base = base("crm", 2);
        let c = full_page(&base, "crm <x>", &full(2, 2, FullReason::Pool), None, 0);
        assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(c.headers, base.headers);
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(
            body.contains("All 2 concurrent licenses of <strong>crm &lt;x&gt;</strong>"),
            "{body}"
        );
        assert!(
            body.contains("<strong>2 of 2</strong> seats of <strong>crm &lt;x&gt;</strong> in use"),
            "{body}"
        );
        assert!(!body.contains("<form"), "{body}");
        let c = full_page(&base, "crm", &full(3, 10, FullReason::UserMax), None, 0);
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(
            body.contains("session limit") && body.contains("3 of 10"),
            "{body}"
        );
    }

    #[test]
    fn offer_lists_own_sessions_with_one_form_each() {
        let base = base("crm", 1);
        let row = |token: &str, this_device| OfferedSession {
            started_at: 1_700_000_000_000,
            last_activity: 1_700_000_060_000,
            client: "web".into(),
            device: Some("0123456789abcdef0123456789abcdef".into()),
            this_device,
            standby: false,
            token: token.into(),
        };
        let offer = Offer {
            user: "al<i>ce",
            action: "/.seatgate/self-service",
            valid_secs: 120,
            sessions: &[row("t1", false), row("t\"2", true)],
        };
        let c = full_page(
            &base,
            "crm",
            &full(1, 1, FullReason::Pool),
            Some(&offer),
            1_700_000_120_000,
        );
        let body = std::str::from_utf8(&c.body).unwrap();
        assert_eq!(
            body.matches("<form method=\"post\" action=\"/.seatgate/self-service\">")
                .count(),
            2
        );
        assert_eq!(body.matches("End this session and continue").count(), 2);
        assert!(body.contains("value=\"t1\""), "{body}");
        assert!(body.contains("value=\"t&quot;2\""), "{body}");
        assert!(body.contains("al&lt;i&gt;ce"), "{body}");
        assert!(
            body.contains("2023-11-14 22:13:20 UTC (2 min ago)"),
            "{body}"
        );
        assert!(
            body.contains("2023-11-14 22:14:20 UTC (1 min ago)"),
            "{body}"
        );
        assert!(
            body.contains("web, device 01234567 (this browser)"),
            "{body}"
        );
        assert!(body.contains("1 of 1"), "{body}");
        assert!(body.contains("valid for 2 min"), "{body}");
    }

    #[test]
    fn the_waiting_page_escapes_and_allows_only_its_own_script() {
        let s = QueueStatus {
            id: crate::domain::SeatId(1),
            state: TicketState::Waiting,
            position: 3,
            estimated_wait: None,
            ready_until: None,
            length: 4,
        };
        let w = InLine {
            product: "crm <b>",
            status: Some(&s),
            poll: "/x/.seatgate/queue",
            login: "/x/login?a=1&b=2",
            poll_every: 2000,
            refresh_only: false,
        };
        let c = waiting_page(&w);
        assert_eq!(c.status, StatusCode::OK);
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(
            body.contains("crm &lt;b&gt;") && !body.contains("crm <b>"),
            "{body}"
        );
        assert!(body.contains("id=\"pos\">3<") && body.contains("id=\"eta\">unknown<"));
        assert!(body.contains("href=\"/x/login?a=1&amp;b=2\""), "{body}");
        assert!(
            body.contains("<noscript><meta http-equiv=\"refresh\""),
            "{body}"
        );
        assert!(body.contains(&format!("<script>{QUEUE_SCRIPT}</script>")));
        let csp = c
            .headers
            .iter()
            .find(|(k, _)| k == http::header::CONTENT_SECURITY_POLICY)
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .unwrap();
        assert!(csp.contains(&source_hash(QUEUE_SCRIPT)) && csp.contains(&source_hash(STYLE)));
        // Ready, without script: the held-until time and the way to the login.
        let ready = QueueStatus {
            state: TicketState::Ready,
            ready_until: Some(1_700_000_000_000),
            estimated_wait: Some(0),
            ..s
        };
        let c = waiting_page(&InLine {
            status: Some(&ready),
            refresh_only: true,
            ..w
        });
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(!body.contains("<script>"), "{body}");
        assert!(
            body.contains("<title>A seat is ready for you</title>"),
            "{body}"
        );
        assert!(body.contains("2023-11-14 22:13:20 UTC"), "{body}");
        let c = waiting_page(&InLine {
            status: None,
            refresh_only: true,
            ..w
        });
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(
            body.contains("has expired") && !body.contains("http-equiv"),
            "{body}"
        );
    }

    #[test]
    fn self_service_pages_name_the_product() {
        let r = self_service_done("crm & co", "/login");
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert!(r.headers.iter().any(
            |(k, v)| k == http::header::LOCATION && v == "/login?seatgate_notice=self_service"
        ));
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .contains("crm &amp; co"));
        let r = self_service_refused(StatusCode::GONE, "crm", "This offer has expired.", "/login");
        assert_eq!(r.status, StatusCode::GONE);
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("This offer has expired.") && body.contains("<strong>crm</strong>"));
        assert_eq!(app_unreachable("crm").status, StatusCode::BAD_GATEWAY);
    }
}
