//! The proxy's HTTP chores: reading a small body, the forwarding headers, relaying an answer
//! the gateway fetched itself, the app's word on its cookie, the heartbeat splice and the
//! access log line.

use super::Ctx;
use crate::app::{App, Runtime};
use crate::appclient::HOP_BY_HOP;
use crate::config::Product;
use crate::domain::{now_ms, Millis, SessionKey};
use crate::policy::classify::{self, Action, BadLogin};
use crate::policy::cookies::{self, CookieWord};
use crate::policy::forwarded;
use crate::presence::{self, Injector, Script};
use bytes::{Bytes, BytesMut};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// Sets the request's `X-Forwarded-For` and `-Proto` for the app (`policy::forwarded`): the
/// proxied request and the self-service's own login call alike.
pub(super) fn set_forwarded(
    s: &Session,
    req: &mut RequestHeader,
    rt: Option<&Runtime>,
) -> Result<()> {
    // Header names as values, not strings: pingora would parse a `&str` name every time.
    static XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    static XFP: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
    let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
    let trusted = rt.map_or(&[][..], |rt| rt.config.trusted_proxies.as_slice());
    let header = |n: &http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
    let (xff, proto) = forwarded::forwarded(peer, trusted, header(&XFF), header(&XFP), tls);
    match xff {
        Some(v) => req.insert_header(XFF.clone(), v)?,
        None => {
            req.remove_header(&XFF);
        }
    }
    req.insert_header(XFP.clone(), http::HeaderValue::from_static(proto))?;
    Ok(())
}

/// Gives a browser that came without one the device cookie of `seats_per: user_device`.
pub(super) fn set_device_cookie(
    resp: &mut ResponseHeader,
    p: &Product,
    device: Option<&str>,
) -> Result<()> {
    if let Some(d) = device {
        resp.append_header(
            http::header::SET_COOKIE,
            cookies::device_set_cookie(&p.session.device_cookie, d),
        )?;
    }
    Ok(())
}

pub(super) fn set_cookies(h: &ResponseHeader) -> Vec<&str> {
    h.headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The app's last word on its session cookie in this response.
pub(super) fn app_word_on(resp: &ResponseHeader, cookie: &str) -> Option<CookieWord> {
    let set = set_cookies(resp);
    if set.is_empty() {
        return None;
    }
    let now = (now_ms() / 1000) as i64;
    cookies::set_cookie_word(&set, cookie, now)
}

/// Reads the whole (small) body, keeping it for pingora to send upstream.
pub(super) async fn read_body(
    s: &mut Session,
    limit: usize,
) -> Result<std::result::Result<Bytes, BadLogin>> {
    if let Some(len) = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Ok(Err(BadLogin::TooLarge { limit }));
        }
    }
    if !s.is_body_done()
        && s.req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        // The client holds its body back until it hears from us (curl for a second).
        s.write_continue_response().await?;
    }
    s.enable_retry_buffering();
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.read_request_body().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Ok(Err(BadLogin::TooLarge { limit }));
        }
    }
    Ok(Ok(buf.freeze()))
}

/// Writes the app's answer as the app gave it (hop-by-hop headers aside).
pub(super) async fn relay(
    s: &mut Session,
    mut header: ResponseHeader,
    body: Bytes,
) -> Result<bool> {
    for h in HOP_BY_HOP {
        header.remove_header(h);
    }
    let bodiless = matches!(header.status.as_u16(), 204 | 304);
    if bodiless {
        header.remove_header(&http::header::CONTENT_LENGTH);
    } else {
        header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    }
    let end = bodiless || body.is_empty();
    s.write_response_header(Box::new(header), end).await?;
    if !end {
        s.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Sets up the splice for this response if it is a page of a seat holder: the presence
/// script when the product has presence, and the administrator's end notice while the
/// session is in its grace period.
pub(super) fn plan_injection(
    s: &mut Session,
    resp: &mut ResponseHeader,
    script: Option<&Script>,
    ending_at: Option<Millis>,
) -> Result<Option<Box<Injector>>> {
    let notice =
        ending_at.map(|at| presence::ending_notice(at.saturating_sub(now_ms()).div_ceil(1000)));
    if script.is_none() && notice.is_none() {
        return Ok(None);
    }
    let req = s.req_header();
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
    if !chunked {
        // A close-delimited body ends the connection.
        s.set_keepalive(None);
    }
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
    Ok(Some(Box::new(Injector::new(plan.encoding, tag))))
}

/// The access log line (`access_log`): plain facts only, never a cookie value.
pub(super) fn access_log(app: &App, s: &Session, ctx: &Ctx) {
    let rt = ctx.rt.clone();
    let p = rt.as_deref().and_then(|rt| ctx.product(rt));
    let (req, resp) = (s.req_header(), s.response_written());
    // The session: the request's cookie, or the one a login's answer just set.
    let seat = p.and_then(|p| {
        let key = ctx
            .request_key
            .or_else(|| match app_word_on(resp?, &p.session.cookie)? {
                CookieWord::Set(v) => Some(SessionKey::new(&p.name, &v)),
                CookieWord::Deleted => None,
            })?;
        Some(key.hex()[..12].to_string())
    });
    let user = match (p, ctx.action) {
        (Some(p), Some(Action::Login)) => {
            let body = s.get_retry_buffer().unwrap_or_default();
            classify::login_user(&p.login.user, &req.headers, &body)
                .ok()
                .flatten()
        }
        _ => None,
    };
    // As the audit log writes it: a keyed hash with `audit.hash_users`.
    let user = user.and_then(|u| app.audit.user(Some(&u)).as_str().map(str::to_owned));
    let peer = s.client_addr().map(|a| a.to_string());
    app.access_log.write(&crate::access_log::Request {
        product: p.map(|p| p.name.as_str()),
        client: p.map_or("default", |p| crate::gate::client_label(p, ctx.client)),
        action: ctx.action.unwrap_or(Action::Pass).label(),
        method: req.method.as_str(),
        path: crate::access_log::log_path(req.uri.path()),
        status: resp.map_or(0, |r| r.status.as_u16()),
        duration: ctx.started.elapsed(),
        bytes: s.body_bytes_sent() as u64,
        seat: seat.as_deref(),
        user: user.as_deref(),
        denied: ctx.rec.denied(),
        peer: peer.as_deref(),
        http: if s.is_http2() { "2" } else { "1.1" },
        tls: s.digest().is_some_and(|d| d.ssl_digest.is_some()),
    });
}
