//! Which pages of a seat holder get the heartbeat script and the administrator's end notice,
//! and how the response is rewritten for it (`presence` holds the pure parts).

use crate::domain::{now_ms, Millis};
use crate::presence::{self, Injector, Script};
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// The splice planned for one page.
pub struct Page {
    pub inject: Box<Injector>,
    /// The body becomes close-delimited (an HTTP/1.0 client): the connection ends with it.
    pub close: bool,
}

/// Sets up the splice for this response if it is a page of a seat holder: the presence
/// script when the product has presence, and the administrator's end notice while the
/// session is in its grace period.
pub fn plan_injection(
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    script: Option<&Script>,
    ending_at: Option<Millis>,
) -> Result<Option<Page>> {
    let notice =
        ending_at.map(|at| presence::ending_notice(at.saturating_sub(now_ms()).div_ceil(1000)));
    if script.is_none() && notice.is_none() {
        return Ok(None);
    }
    let Some(plan) = presence::plan(
        script.map(|s| s.csp_hash.as_str()),
        &req.method,
        &req.headers,
        resp.status,
        &resp.headers,
    ) else {
        return Ok(None);
    };
    let chunked = req.version == http::Version::HTTP_11;
    plan.apply(resp, chunked)?;
    let tag = match (notice, script) {
        (Some(n), Some(sc)) => {
            let t = sc.tag(plan.csp.nonce.as_deref());
            let mut both = Vec::with_capacity(n.len() + t.len());
            both.extend_from_slice(&n);
            both.extend_from_slice(&t);
            Bytes::from(both)
        }
        (Some(n), None) => n,
        (None, Some(sc)) => sc.tag(plan.csp.nonce.as_deref()),
        (None, None) => return Ok(None),
    };
    Ok(Some(Page {
        inject: Box::new(Injector::new(plan.encoding, tag)),
        // A close-delimited body ends the connection.
        close: !chunked,
    }))
}
