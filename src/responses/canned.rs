//! The answer type: status, headers and body, with the whole response header built once for
//! answers fixed at config load; and the pool-full answers of a product, rendered from the
//! config's typed [`OnFull`] once per config snapshot.

use super::pages;
use crate::config::{OnFull, OnFullBody, Page, Product};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;

/// A prebuilt response: status, headers and body.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// The whole response header, built once ([`Canned::prebuilt`]) for answers fixed at
    /// config load: a check storm then clones it instead of parsing and hashing every header
    /// name per request.
    pub(super) head: Option<Arc<ResponseHeader>>,
}

impl PartialEq for Canned {
    fn eq(&self, o: &Self) -> bool {
        (self.status, &self.headers, &self.body) == (o.status, &o.headers, &o.body)
    }
}

impl Eq for Canned {}

impl Canned {
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Canned {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            )],
            body: body.into(),
            head: None,
        }
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut b: String = body.into();
        b.push('\n');
        Self::new(status, "text/plain; charset=utf-8", b)
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    pub fn html(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/html; charset=utf-8", body)
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self.head = None;
        self
    }

    /// Builds the header now; for answers that never change after config load.
    pub fn prebuilt(mut self) -> Result<Self, String> {
        self.head = None;
        let head = self
            .to_header()
            .map_err(|e| format!("cannot build the answer's header: {e}"))?;
        self.head = Some(Arc::new(head));
        Ok(self)
    }

    /// Appends a header whose value is only known at request time; invalid bytes are dropped
    /// rather than failing the answer.
    pub fn header_str(self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(v) => self.header(name, v),
            Err(_) => self,
        }
    }

    /// The header, with `Retry-After: secs` replacing any configured one.
    pub fn to_header_with(
        &self,
        retry_after: Option<u64>,
    ) -> pingora_error::Result<ResponseHeader> {
        let mut h = self.to_header()?;
        if let Some(secs) = retry_after {
            h.insert_header(http::header::RETRY_AFTER, secs.max(1))?;
        }
        Ok(h)
    }

    pub fn to_header(&self) -> pingora_error::Result<ResponseHeader> {
        if let Some(h) = &self.head {
            return Ok(ResponseHeader::clone(h));
        }
        let mut h = ResponseHeader::build(self.status, Some(self.headers.len() + 2))?;
        for (k, v) in &self.headers {
            h.append_header(k.clone(), v.clone())?;
        }
        if !self
            .headers
            .iter()
            .any(|(k, _)| k == http::header::CACHE_CONTROL)
        {
            h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        }
        h.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        Ok(h)
    }

    /// Writes the whole answer; the app never sees the request.
    pub async fn send(&self, session: &mut Session) -> pingora_error::Result<()> {
        self.send_with(session, None).await
    }

    /// `send`, with `Retry-After: retry_after` in place of any the answer has.
    pub async fn send_with(
        &self,
        session: &mut Session,
        retry_after: Option<u64>,
    ) -> pingora_error::Result<()> {
        let header = self.to_header_with(retry_after)?;
        session
            .write_response_header(Box::new(header), self.body.is_empty())
            .await?;
        if !self.body.is_empty() {
            session
                .write_response_body(Some(self.body.clone()), true)
                .await?;
        }
        Ok(())
    }
}

/// The seat-pool-full answer of one client kind, rendered from its validated `on_full`.
pub fn on_full(o: &OnFull, product: &str, seats: u32) -> Canned {
    let body = match &o.body {
        OnFullBody::Text(b) => b.clone(),
        OnFullBody::Page(Page::WebDenied) => Bytes::from(pages::denied_page(product, seats)),
    };
    let mut headers = Vec::with_capacity(o.headers.len() + 1);
    headers.push((http::header::CONTENT_TYPE, o.content_type.clone()));
    headers.extend(o.headers.iter().cloned());
    let c = Canned {
        status: o.status,
        headers,
        body,
        head: None,
    };
    // Config validated every name and value, so this cannot fail; if it ever did, the answer
    // is still right, only built per request.
    match c.clone().prebuilt() {
        Ok(pre) => pre,
        Err(e) => {
            log::warn!("product {product}: on_full answer not prebuilt: {e}");
            c
        }
    }
}

/// A product's pool-full answers, one per client kind plus the default, rendered once per
/// config snapshot so a check storm only clones them.
#[derive(Debug, Clone)]
pub struct Denials {
    default: Canned,
    clients: Vec<Canned>,
}

impl Denials {
    pub fn new(p: &Product) -> Denials {
        let seats = p.granted_seats();
        Denials {
            default: on_full(&p.default_denial, &p.name, seats),
            clients: p
                .clients
                .iter()
                .map(|c| on_full(&c.on_full, &p.name, seats))
                .collect(),
        }
    }

    /// The answer of client kind `client` (`None`: the request matched no kind).
    pub fn get(&self, client: Option<usize>) -> &Canned {
        client
            .and_then(|i| self.clients.get(i))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What config load does to one `on_full` (YAML, `None`: absent): validate, then render.
    fn from_file(yaml: Option<&str>, product: &str, seats: u32) -> Result<Canned, String> {
        let conf = yaml.map(|y| serde_norway::from_str(y).unwrap());
        crate::config::on_full::on_full(conf.as_ref()).map(|o| on_full(&o, product, seats))
    }

    #[test]
    fn prebuilt_header_is_the_built_one_and_follows_later_headers() {
        let conf = "{status: 429, body: '{\"error\":\"no license\"}', \
                    content_type: application/json, headers: {Retry-After: '30'}}";
        let c = from_file(Some(conf), "p", 1).unwrap();
        let built = Canned {
            head: None,
            ..c.clone()
        }
        .to_header()
        .unwrap();
        let pre = c.to_header().unwrap();
        assert_eq!(pre.status, built.status);
        assert_eq!(pre.headers, built.headers);
        assert_eq!(pre.headers["content-length"], "22");
        assert_eq!(pre.headers["retry-after"], "30");
        let more = c.header(http::header::WARNING, HeaderValue::from_static("199 - x"));
        assert_eq!(more.to_header().unwrap().headers["warning"], "199 - x");
    }

    #[test]
    fn default_denial_names_product_and_seats() {
        let c = from_file(None, "crm <x>", 5).unwrap();
        assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = std::str::from_utf8(&c.body).unwrap();
        assert!(body.contains("All licenses are in use"));
        assert!(body.contains("All 5 concurrent licenses of <strong>crm &lt;x&gt;</strong>"));
    }

    #[test]
    fn body_status_and_headers_from_config() {
        let c = from_file(
            Some("{status: 401, body: \"the user name or password is invalid\", headers: {WWW-Authenticate: Basic}}"),
            "crm",
            5,
        )
        .unwrap();
        assert_eq!(c.status, StatusCode::UNAUTHORIZED);
        assert_eq!(&c.body[..], b"the user name or password is invalid");
        assert!(c
            .headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v == "Basic"));
    }

    #[test]
    fn header_always_has_length_and_no_store() {
        let h = Canned::text(StatusCode::GONE, "x").to_header().unwrap();
        assert_eq!(h.headers.get("content-length").unwrap(), "2");
        assert_eq!(h.headers.get("cache-control").unwrap(), "no-store");
    }
}
