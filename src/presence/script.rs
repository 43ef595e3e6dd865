//! The heartbeat script, built once per product from its `presence_timeout`.
//!
//! It beats every `presence_timeout / 3` from every open tab (hidden tabs too: a hidden tab is
//! still open, and Chrome throttles its timers to at most one per minute, which is why the
//! README recommends at least 90s). It beats at once when a tab becomes visible again or
//! comes back from the back/forward cache (its timers were frozen), stops for good on 410
//! (the seat is gone, nothing left to keep), and on `pagehide` sends a beacon as a hint that
//! this page went away. Old browsers are fine: plain `XMLHttpRequest`, no `fetch`.
//!
//! With [`Extras`] (`idle_by: input`, `idle_warning`) it also notes whether the person used the
//! page since the previous beat (key, pointer, touch, wheel, scroll, the tab becoming visible:
//! one flag, no content, no coordinates) and sends it as `?input=1`; and when a beat's answer
//! carries [`IDLE_HEADER`] it shows the idle warning, styled as the end-notice banner, whose
//! "Stay signed in" button beats at once with input. Without extras the script is exactly what
//! it was before these existed (same bytes, same CSP hash).

use bytes::Bytes;
use std::time::Duration;

pub use crate::config::paths::heartbeat_url;

/// The query a `pagehide` beacon adds: the gateway counts it but does not let it refresh
/// presence (a closing tab must not buy itself another `presence_timeout`).
pub const HIDE_HINT_QUERY: &str = "hint=hide";

/// The query of a beat that reports input since the previous beat.
pub const INPUT_QUERY: &str = "input=1";

/// On a heartbeat's answer: seconds until the seat ends for idleness, while the warning is due.
pub const IDLE_HEADER: &str = "x-seatgate-idle";

/// What the script does beyond presence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// Report input (`idle_by: input`).
    pub input: bool,
    /// Show the idle warning (`idle_warning`).
    pub warn: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The JavaScript between the tags; its hash is what a CSP `'sha256-…'` source names.
    pub body: String,
    /// `'sha256-…'` of `body`, ready to add to a CSP directive.
    pub csp_hash: String,
    /// The tag without nonce, the common case, rendered once.
    tag: Bytes,
}

impl Script {
    pub fn new(heartbeat_url: &str, presence_timeout: Duration) -> Script {
        Script::with(heartbeat_url, presence_timeout, Extras::default())
    }

    pub fn with(heartbeat_url: &str, presence_timeout: Duration, extras: Extras) -> Script {
        // Beat three times per timeout: one lost or late beat never costs a seat.
        let period = (presence_timeout.as_millis() / 3).max(1000);
        // The URL comes from validated config (a path), but it goes into a JS string inside
        // HTML: JSON-encode it and escape `<` so it can never close the script element.
        let url = serde_json::to_string(heartbeat_url)
            .unwrap_or_else(|_| "\"/.seatgate/heartbeat\"".into())
            .replace('<', "\\u003c");
        let body = if extras == Extras::default() {
            format!(
                "(function(w,d){{if(w.__seatgate)return;w.__seatgate=1;\
var u={url},p={period},t=0,s=0;\
function b(){{if(s)return;var x=new XMLHttpRequest();x.open('POST',u,true);\
x.onload=function(){{if(x.status==410){{s=1;clearInterval(t)}}}};x.send()}}\
function g(){{clearInterval(t);if(!s){{b();t=setInterval(b,p)}}}}\
d.addEventListener('visibilitychange',function(){{if(d.visibilityState=='visible')g()}});\
w.addEventListener('pageshow',function(e){{if(e.persisted)g()}});\
w.addEventListener('pagehide',function(){{clearInterval(t);\
if(!s&&navigator.sendBeacon)navigator.sendBeacon(u+'?{HIDE_HINT_QUERY}')}});\
g()}})(window,document);"
            )
        } else {
            extended(&url, period, extras)
        };
        let csp_hash = super::csp::source_hash(&body);
        let tag = Bytes::from(format!("<script data-seatgate>{body}</script>"));
        Script {
            body,
            csp_hash,
            tag,
        }
    }

    /// The element to splice in, carrying the page's own nonce when its CSP uses one.
    pub fn tag(&self, nonce: Option<&str>) -> Bytes {
        match nonce {
            None => self.tag.clone(),
            Some(n) => Bytes::from(format!(
                "<script data-seatgate nonce=\"{}\">{}</script>",
                super::escape_html(n),
                self.body
            )),
        }
    }
}

/// The script with input reporting and/or the idle warning. `i`: input since the last beat;
/// `n`: the banner element while shown. The banner is built with DOM calls and CSSOM styles,
/// which a page's CSP does not restrict (no inline markup or style attribute is parsed).
fn extended(url: &str, period: u128, x: Extras) -> String {
    let style = crate::presence::BANNER_STYLE;
    let track = if x.input {
        "function f(){i=1}\
var v=['keydown','mousedown','pointerdown','touchstart','wheel','scroll'];\
for(var j=0;j<v.length;j++)d.addEventListener(v[j],f,true);"
    } else {
        ""
    };
    let seen = if x.input { "i=1;" } else { "" };
    let warn = if x.warn {
        format!(
            "function m(v){{v=parseInt(v,10);if(!(v>0)){{if(n){{n.parentNode&&n.parentNode.removeChild(n);n=0}}return}}\
if(!n){{n=d.createElement('div');n.setAttribute('role','alert');n.setAttribute('data-seatgate-idle','');\
n.style.cssText='{style}';n.appendChild(d.createElement('span'));\
var k=d.createElement('button');k.type='button';k.textContent='Stay signed in';\
k.style.cssText='margin-left:1em;font:bold 15px sans-serif;padding:.2em .8em;cursor:pointer';\
k.onclick=function(){{i=1;b()}};n.appendChild(k);(d.body||d.documentElement).appendChild(n)}}\
var q=60>v?v+' seconds':Math.ceil(v/60)+' minutes';\
n.firstChild.textContent='You will be signed out in '+q+' because you seem to be away \\u2014 '}}"
        )
    } else {
        "function m(){}".into()
    };
    format!(
        "(function(w,d){{if(w.__seatgate)return;w.__seatgate=1;\
var u={url},p={period},t=0,s=0,i=0,n=0;{track}{warn}\
function b(){{if(s)return;var x=new XMLHttpRequest();x.open('POST',u+(i?'?{INPUT_QUERY}':''),true);i=0;\
x.onload=function(){{if(x.status==410){{s=1;clearInterval(t);m(0)}}else m(x.getResponseHeader('{IDLE_HEADER}'))}};x.send()}}\
function g(){{clearInterval(t);if(!s){{b();t=setInterval(b,p)}}}}\
d.addEventListener('visibilitychange',function(){{if(d.visibilityState=='visible'){{{seen}g()}}}});\
w.addEventListener('pageshow',function(e){{if(e.persisted)g()}});\
w.addEventListener('pagehide',function(){{clearInterval(t);\
if(!s&&navigator.sendBeacon)navigator.sendBeacon(u+'?{HIDE_HINT_QUERY}')}});\
g()}})(window,document);"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_follows_the_path_prefix() {
        assert_eq!(heartbeat_url("/"), "/.seatgate/heartbeat");
        assert_eq!(heartbeat_url("/crm"), "/crm/.seatgate/heartbeat");
        assert_eq!(heartbeat_url("/crm/"), "/crm/.seatgate/heartbeat");
    }

    #[test]
    fn beats_three_times_per_timeout_and_stays_small() {
        let s = Script::new("/.seatgate/heartbeat", Duration::from_secs(90));
        assert!(s.body.contains("p=30000"), "{}", s.body);
        assert!(s.body.contains("u=\"/.seatgate/heartbeat\""));
        assert!(s.body.contains("sendBeacon(u+'?hint=hide')"));
        assert!(s.tag(None).len() < 800, "{} bytes", s.tag(None).len());
        // Never faster than once a second, whatever the timeout.
        let fast = Script::new("/x", Duration::from_millis(1500));
        assert!(fast.body.contains("p=1000"));
    }

    #[test]
    fn hash_matches_the_body_and_nonce_is_escaped() {
        let s = Script::new("/.seatgate/heartbeat", Duration::from_secs(3));
        use base64::Engine as _;
        use sha2::{Digest as _, Sha256};
        let want = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&s.body));
        assert_eq!(s.csp_hash, format!("'sha256-{want}'"));
        let tag = s.tag(Some("ab\"c"));
        let tag = std::str::from_utf8(&tag).unwrap();
        assert!(tag.starts_with("<script data-seatgate nonce=\"ab&quot;c\">"));
        assert!(tag.ends_with("</script>"));
    }

    #[test]
    fn url_cannot_break_out_of_the_script() {
        let s = Script::new("/a</script><b>\"'", Duration::from_secs(3));
        assert!(!s.body.contains("</script>"));
        assert!(!s.body.contains('<'));
    }

    #[test]
    fn extras_report_input_and_show_the_warning() {
        let plain = Script::new("/.seatgate/heartbeat", Duration::from_secs(90));
        let same = Script::with(
            "/.seatgate/heartbeat",
            Duration::from_secs(90),
            Extras::default(),
        );
        assert_eq!(plain, same, "without extras nothing changes");
        assert!(!plain.body.contains("input=1"));
        let input = Extras {
            input: true,
            warn: false,
        };
        let s = Script::with("/.seatgate/heartbeat", Duration::from_secs(90), input);
        assert!(s.body.contains("u+(i?'?input=1':'')"), "{}", s.body);
        assert!(s.body.contains("'keydown'") && !s.body.contains("Stay signed in"));
        assert_ne!(s.csp_hash, plain.csp_hash);
        let warn = Extras {
            input: false,
            warn: true,
        };
        let s = Script::with("/.seatgate/heartbeat", Duration::from_secs(90), warn);
        assert!(s.body.contains("Stay signed in") && s.body.contains("x-seatgate-idle"));
        assert!(!s.body.contains("'keydown'"));
        assert!(
            !s.body.contains('<'),
            "the body must never close its own element"
        );
        let both = Script::with(
            "/x",
            Duration::from_secs(90),
            Extras {
                input: true,
                warn: true,
            },
        );
        assert!(
            both.tag(None).len() < 2500,
            "{} bytes",
            both.tag(None).len()
        );
    }
}
