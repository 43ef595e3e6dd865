//! Requests a production proxy refuses before anything else looks at them: framing that two
//! HTTP parsers could read differently (request smuggling) and sizes past sane bounds. The
//! HTTP parser (pingora over httparse) already refuses obs-fold, conflicting `Content-Length`
//! values, `Transfer-Encoding` other than `chunked` and absolute-form targets with its own
//! 400; what it lets through and the app behind might read differently is refused here.

use http::{HeaderMap, StatusCode, Version};

/// Bounds on a request head (nginx's defaults are 8 KiB per line and 32 KiB in all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri: 8 * 1024,
            max_headers: 32 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Both `Content-Length` and `Transfer-Encoding`: the classic CL.TE / TE.CL desync.
    LengthAndChunked,
    /// Several `Content-Length` values, or one that is not a plain number.
    ContentLength,
    /// A `Transfer-Encoding` other than exactly `chunked`, or any on HTTP/1.0.
    TransferEncoding,
    /// A line ended by LF alone: parsers differ on where such a header ends.
    BareLf,
    UriTooLong,
    HeadersTooLarge,
}

impl BadRequest {
    pub fn status(self) -> StatusCode {
        match self {
            BadRequest::UriTooLong => StatusCode::URI_TOO_LONG,
            BadRequest::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of `seatgate_bad_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            BadRequest::LengthAndChunked => "length_and_chunked",
            BadRequest::ContentLength => "content_length",
            BadRequest::TransferEncoding => "transfer_encoding",
            BadRequest::BareLf => "bare_lf",
            BadRequest::UriTooLong => "uri_too_long",
            BadRequest::HeadersTooLarge => "headers_too_large",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            BadRequest::LengthAndChunked => "request has both Content-Length and Transfer-Encoding",
            BadRequest::ContentLength => "request has an ambiguous Content-Length",
            BadRequest::TransferEncoding => "request has an unsupported Transfer-Encoding",
            BadRequest::BareLf => "request head has a line ended by LF without CR",
            BadRequest::UriTooLong => "request target is too long",
            BadRequest::HeadersTooLarge => "request headers are too large",
        }
    }

    pub fn all() -> [BadRequest; 6] {
        [
            BadRequest::LengthAndChunked,
            BadRequest::ContentLength,
            BadRequest::TransferEncoding,
            BadRequest::BareLf,
            BadRequest::UriTooLong,
            BadRequest::HeadersTooLarge,
        ]
    }
}

/// The first reason to refuse this request head, if any. `raw_head` is the head as received
/// (HTTP/1 only): the parser accepts bare LF line ends and drops `Content-Length` when
/// `Transfer-Encoding` is present (RFC 9112 6.3 lets it), so only the raw bytes still show
/// either.
pub fn inspect(
    version: Version,
    uri_len: usize,
    headers: &HeaderMap,
    raw_head: Option<&[u8]>,
    limits: Limits,
) -> Result<(), BadRequest> {
    if let Some(raw) = raw_head {
        // memchr: this runs on every request, and a head has only a handful of line ends.
        if memchr::memchr_iter(b'\n', raw).any(|i| i == 0 || raw[i - 1] != b'\r') {
            return Err(BadRequest::BareLf);
        }
        if headers.contains_key(http::header::TRANSFER_ENCODING) && has_content_length(raw) {
            return Err(BadRequest::LengthAndChunked);
        }
    }
    if uri_len > limits.max_uri {
        return Err(BadRequest::UriTooLong);
    }
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limits.max_headers {
        return Err(BadRequest::HeadersTooLarge);
    }
    let te = headers.get_all(http::header::TRANSFER_ENCODING);
    let has_te = te.iter().next().is_some();
    let mut cl = headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        if has_te {
            return Err(BadRequest::LengthAndChunked);
        }
        let plain = |v: &http::HeaderValue| {
            !v.is_empty() && v.len() <= 19 && v.as_bytes().iter().all(u8::is_ascii_digit)
        };
        if !plain(first) || cl.any(|v| v != first) {
            return Err(BadRequest::ContentLength);
        }
    }
    if has_te {
        let mut n = 0;
        for v in te.iter() {
            n += 1;
            if n > 1 || !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(BadRequest::TransferEncoding);
            }
        }
        if version < Version::HTTP_11 {
            return Err(BadRequest::TransferEncoding);
        }
    }
    Ok(())
}

/// Whether a raw head has a `Content-Length` header line.
fn has_content_length(raw: &[u8]) -> bool {
    raw.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn framing_table() {
        let l = Limits::default();
        let v11 = Version::HTTP_11;
        type Case<'a> = (&'a [(&'a str, &'a str)], Version, Result<(), BadRequest>);
        let cases: &[Case] = &[
            (&[("host", "a")], v11, Ok(())),
            (&[("content-length", "4")], v11, Ok(())),
            (
                &[("content-length", "4"), ("content-length", "4")],
                v11,
                Ok(()),
            ),
            (
                &[("content-length", "4"), ("content-length", "5")],
                v11,
                Err(BadRequest::ContentLength),
            ),
            (
                &[("content-length", "4, 4")],
                v11,
                Err(BadRequest::ContentLength),
            ),
            (
                &[("content-length", "+4")],
                v11,
                Err(BadRequest::ContentLength),
            ),
            (
                &[("content-length", "")],
                v11,
                Err(BadRequest::ContentLength),
            ),
            (
                &[("content-length", "4"), ("transfer-encoding", "chunked")],
                v11,
                Err(BadRequest::LengthAndChunked),
            ),
            (&[("transfer-encoding", "chunked")], v11, Ok(())),
            (&[("transfer-encoding", "Chunked ")], v11, Ok(())),
            (
                &[("transfer-encoding", "chunked, identity")],
                v11,
                Err(BadRequest::TransferEncoding),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                v11,
                Err(BadRequest::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "gzip")],
                v11,
                Err(BadRequest::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "chunked")],
                Version::HTTP_10,
                Err(BadRequest::TransferEncoding),
            ),
        ];
        for (headers, version, want) in cases {
            assert_eq!(
                inspect(*version, 10, &h(headers), None, l),
                *want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn raw_heads_show_what_the_parser_hid() {
        let l = Limits::default();
        let te = h(&[("transfer-encoding", "chunked")]);
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            inspect(Version::HTTP_11, 1, &te, Some(raw), l),
            Err(BadRequest::LengthAndChunked)
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(inspect(Version::HTTP_11, 1, &te, Some(raw), l), Ok(()));
        let raw = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(
            inspect(Version::HTTP_11, 1, &h(&[]), Some(raw), l),
            Err(BadRequest::BareLf)
        );
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n";
        assert_eq!(
            inspect(Version::HTTP_11, 1, &h(&[]), Some(raw), l),
            Err(BadRequest::BareLf)
        );
    }

    #[test]
    fn size_bounds() {
        let l = Limits {
            max_uri: 100,
            max_headers: 200,
        };
        assert_eq!(inspect(Version::HTTP_11, 100, &h(&[]), None, l), Ok(()));
        assert_eq!(
            inspect(Version::HTTP_11, 101, &h(&[]), None, l),
            Err(BadRequest::UriTooLong)
        );
        let big = "x".repeat(200);
        assert_eq!(
            inspect(Version::HTTP_11, 1, &h(&[("x-big", &big)]), None, l),
            Err(BadRequest::HeadersTooLarge)
        );
        assert_eq!(BadRequest::UriTooLong.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            BadRequest::HeadersTooLarge.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
