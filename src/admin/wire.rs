//! The admin API on the wire: its JSON and text answers, and bounded request bodies.

use http::{Response, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// How much of an oversized body is read and dropped before answering 413, so the client
/// gets to read the answer (closing on unread data makes the kernel reset the connection).
const MAX_DRAIN: usize = 1024 * 1024;

pub fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    text(status, "application/json", v.to_string().into_bytes())
}

pub fn error(status: StatusCode, msg: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": msg }))
}

/// The ledger's store failed: the answer is unavailable, not wrong.
pub fn store_error(e: impl std::fmt::Display) -> Response<Vec<u8>> {
    error(StatusCode::SERVICE_UNAVAILABLE, &format!("store: {e}"))
}

pub fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

/// The media type of the request body, lowercased, without parameters.
pub fn content_type(s: &ServerSession) -> String {
    s.req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads a bounded body; an oversized one is drained (up to [`MAX_DRAIN`]) and refused.
pub async fn read_body(s: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body is larger than 64 KiB",
        )
    };
    let declared = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN as u64) {
        s.set_keepalive(None);
        return Err(too_large());
    }
    let mut buf = Vec::new();
    let mut seen = 0usize;
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                seen += chunk.len();
                if seen > MAX_DRAIN {
                    s.set_keepalive(None);
                    return Err(too_large());
                }
                if seen <= MAX_ADMIN_BODY {
                    buf.extend_from_slice(&chunk);
                }
            }
            Ok(None) if seen > MAX_ADMIN_BODY => return Err(too_large()),
            Ok(None) => return Ok(buf),
            Err(_) => {
                s.set_keepalive(None);
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body",
                ));
            }
        }
    }
}

/// The body of an API POST: empty, or JSON. A cross-site form cannot send JSON, so a browser
/// that cached Basic credentials cannot be made to post by another site.
pub async fn read_json_body(s: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let ct = content_type(s);
    let body = read_body(s).await?;
    if !body.is_empty() && ct != "application/json" {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as application/json",
        ));
    }
    Ok(body)
}

/// A JSON body of the shape `shape` names in the error.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {shape}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_never_cached_and_carry_their_length() {
        let r = error(StatusCode::NOT_FOUND, "not found");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["content-length"], r.body().len().to_string());
        assert_eq!(r.body(), br#"{"error":"not found"}"#);
    }
}
