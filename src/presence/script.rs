//! The heartbeat script, built once per product from its `presence_timeout`.
//!
//! It beats every `presence_timeout / 3` from every open tab (hidden tabs too: a hidden tab is
//! still open, and Chrome throttles its timers to at most one per minute, which is why the
//! README recommends at least 90s). It beats at once when a tab becomes visible again or
//! comes back from the back/forward cache (its timers were frozen), stops for good on 410
//! (the seat is gone, nothing left to keep), and on `pagehide` sends a beacon as a hint that
//! this page went away. Old browsers are fine: plain `XMLHttpRequest`, no `fetch`.

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Where the script beats. Under the product's `path_prefix`, so the request reaches the same
/// product and carries its session cookie even when the cookie is path-scoped.
pub fn heartbeat_url(path_prefix: &str) -> String {
    format!(
        "{}/{}",
        path_prefix.trim_end_matches('/'),
        crate::policy::classify::HEARTBEAT_SUFFIX
    )
}

/// The query a `pagehide` beacon adds: the gateway counts it but does not let it refresh
/// presence (a closing tab must not buy itself another `presence_timeout`).
pub const HIDE_HINT_QUERY: &str = "hint=hide";

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
        // Beat three times per timeout: one lost or late beat never costs a seat.
        let period = (presence_timeout.as_millis() / 3).max(1000);
        // The URL comes from validated config (a path), but it goes into a JS string inside
        // HTML: JSON-encode it and escape `<` so it can never close the script element.
        let url = serde_json::to_string(heartbeat_url)
            .unwrap_or_else(|_| "\"/.seatgate/heartbeat\"".into())
            .replace('<', "\\u003c");
        let body = format!(
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
        );
        let csp_hash = format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()))
        );
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
                crate::responses::escape_html(n),
                self.body
            )),
        }
    }
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
}
