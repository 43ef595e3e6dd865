//! The proxy's HTTP chores: reading a small body, the forwarding headers, the device cookie.

use crate::app::Runtime;
use crate::config::Product;
use crate::policy::classify::BadLogin;
use crate::policy::cookies;
use crate::policy::forwarded;
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
    // Inserted by their wire spelling: pingora copies a `HeaderName` it has no title case for.
    static XFF: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    static XFP: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
    let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
    let trusted = rt.map_or(&[][..], |rt| rt.config.trusted_proxies.as_slice());
    let header = |n: &http::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
    let prev = || (header(&XFF), header(&XFP));
    let (xff, proto) = forwarded::forwarded(peer, trusted, prev, tls);
    match xff {
        Some(v) => req.insert_header(Bytes::from_static(b"X-Forwarded-For"), v)?,
        None => {
            req.remove_header(&XFF);
        }
    }
    let proto = http::HeaderValue::from_static(proto);
    req.insert_header(Bytes::from_static(b"X-Forwarded-Proto"), proto)?;
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
