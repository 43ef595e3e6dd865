//! The gateway's own calls to the app: a self-service login sent on the user's behalf, and
//! the background logout of an app session the browser never got.
//!
//! The login goes out of band (pingora's HTTP/1 client) rather than through the proxied
//! response, because a bodiless upstream answer (a 302) leaves no body phase in which to put
//! the offer page; this path only runs when the pool is full. Logouts go to one worker task
//! through a bounded queue and run at most `LOGOUT_PARALLEL` at once: a burst of offers
//! cannot pile up tasks, a full queue drops (and logs and counts) the logout, and a worker
//! that ended is started again by the next logout. Its tasks end with it (dropping the
//! client aborts the worker, and its `JoinSet` aborts what it runs).

use crate::config::Product;
use crate::gate::Verdict;
use crate::policy::cookies;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The whole login exchange with the app, connect to last body byte.
pub const APP_TIMEOUT: Duration = Duration::from_secs(10);
/// The background logout of a session the browser never got.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Login answers are redirects or short pages; a larger one is not relayed.
const MAX_APP_BODY: usize = 1 << 20;
/// Logouts waiting for the worker; past this they are dropped (the app session then lives
/// until the app drops it, as with no logout path).
const LOGOUT_QUEUE: usize = 256;
/// Logouts under way at once.
const LOGOUT_PARALLEL: usize = 8;

/// Headers of one hop only; never copied between the two connections.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// One logout at the app of a session the browser never got.
pub struct Logout {
    pub peer: HttpPeer,
    pub product: String,
    pub req: RequestHeader,
}

pub struct AppClient {
    connector: Arc<Connector>,
    worker: Mutex<Option<Worker>>,
    /// Logouts that failed or were dropped (also logged).
    failures: Arc<AtomicU64>,
}

struct Worker {
    queue: mpsc::Sender<Logout>,
    task: tokio::task::JoinHandle<()>,
}

impl Default for AppClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AppClient {
    pub fn new() -> Self {
        AppClient {
            connector: Arc::new(Connector::new(None)),
            worker: Mutex::new(None),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Logouts that did not reach the app.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// One request to the app on a fresh connection, its answer read whole (bounded), all
    /// within `APP_TIMEOUT`.
    pub async fn call(
        &self,
        peer: HttpPeer,
        req: RequestHeader,
        body: Bytes,
    ) -> Result<(ResponseHeader, Bytes), String> {
        match tokio::time::timeout(APP_TIMEOUT, call(&self.connector, peer, req, body)).await {
            Ok(r) => r,
            Err(_) => Err("timed out".into()),
        }
    }

    /// Sends a full-pool login to the app so it checks the password (`peer`: the product's
    /// app, `None` when it has none): the app's answer, to relay, and what it says about
    /// the session cookie `cookie`.
    pub async fn verify_login(
        &self,
        peer: Option<HttpPeer>,
        req: RequestHeader,
        body: Bytes,
        cookie: &str,
        product: &str,
    ) -> (Option<(ResponseHeader, Bytes)>, Verdict) {
        let Some(peer) = peer else {
            return (None, Verdict::Unreachable);
        };
        match self.call(peer, req, body).await {
            Ok((h, b)) => {
                let set = cookies::set_cookies(&h.headers);
                let v = cookies::set_cookie_value(&set, cookie);
                (Some((h, b)), v.map_or(Verdict::NoSession, Verdict::Session))
            }
            Err(why) => {
                log::warn!("product {product}: login sent for self-service failed: {why}");
                (None, Verdict::Unreachable)
            }
        }
    }

    /// Logs the app session `value` of a self-service offer (which the browser never got) out
    /// at the app, in the background.
    pub fn logout_session(
        &self,
        peer: HttpPeer,
        p: &Product,
        host: Option<HeaderValue>,
        value: &str,
    ) {
        let Some(rule) = &p.logout else {
            log::info!(
                "product {}: no logout path configured; the app session of a self-service offer lives until the app drops it",
                p.name
            );
            return;
        };
        let cookie = format!("{}={value}", p.session.cookie);
        match logout_request(rule.method.as_ref(), &rule.path, host, &cookie) {
            Ok(req) => self.logout(Logout {
                peer,
                product: p.name.clone(),
                req,
            }),
            Err(e) => log::warn!("product {}: cannot build the logout request: {e}", p.name),
        }
    }

    /// Queues a logout for the worker (started on first use, inside the proxy's runtime, and
    /// again if it ended). Never waits.
    pub fn logout(&self, job: Logout) {
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if w.as_ref().is_none_or(|w| w.task.is_finished()) {
            let (queue, rx) = mpsc::channel(LOGOUT_QUEUE);
            let task = tokio::spawn(logouts(self.connector.clone(), rx, self.failures.clone()));
            *w = Some(Worker { queue, task });
        }
        let Some(w) = w.as_ref() else { return };
        if let Err(e) = w.queue.try_send(job) {
            let product = match &e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                    &j.product
                }
            };
            log::warn!("product {product}: logout of an offered login dropped (queue full)");
            crate::metrics::limit_reached("app_logouts");
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AppClient {
    fn drop(&mut self) {
        if let Some(w) = self.worker.get_mut().ok().and_then(Option::take) {
            w.task.abort();
        }
    }
}

/// Runs the queued logouts, up to `LOGOUT_PARALLEL` at once (one slow app must not hold
/// up the others), each within `LOGOUT_TIMEOUT`.
async fn logouts(
    connector: Arc<Connector>,
    mut rx: mpsc::Receiver<Logout>,
    failures: Arc<AtomicU64>,
) {
    let mut running = tokio::task::JoinSet::new();
    while let Some(job) = rx.recv().await {
        while running.len() >= LOGOUT_PARALLEL {
            running.join_next().await;
        }
        while running.try_join_next().is_some() {}
        running.spawn(logout(connector.clone(), job, failures.clone()));
    }
    while running.join_next().await.is_some() {}
}

async fn logout(connector: Arc<Connector>, job: Logout, failures: Arc<AtomicU64>) {
    let Logout { peer, product, req } = job;
    let sent = tokio::time::timeout(LOGOUT_TIMEOUT, call(&connector, peer, req, Bytes::new()));
    let failed = match sent.await {
        Ok(Ok((h, _))) => {
            log::debug!(
                "product {product}: logged out the session of a self-service offer ({})",
                h.status
            );
            false
        }
        Ok(Err(e)) => {
            log::warn!("product {product}: logout of an offered login failed: {e}");
            true
        }
        Err(_) => {
            log::warn!("product {product}: logout of an offered login timed out");
            true
        }
    };
    if failed {
        failures.fetch_add(1, Ordering::Relaxed);
    }
}

async fn call(
    connector: &Connector,
    mut peer: HttpPeer,
    req: RequestHeader,
    body: Bytes,
) -> Result<(ResponseHeader, Bytes), String> {
    peer.options.connection_timeout = Some(Duration::from_secs(3));
    peer.options.read_timeout = Some(APP_TIMEOUT);
    peer.options.write_timeout = Some(APP_TIMEOUT);
    let (mut http, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    http.write_request_header(Box::new(req))
        .await
        .map_err(|e| e.to_string())?;
    if !body.is_empty() {
        http.write_body(&body).await.map_err(|e| e.to_string())?;
    }
    http.finish_body().await.map_err(|e| e.to_string())?;
    let mut header = http
        .read_resp_header_parts()
        .await
        .map_err(|e| e.to_string())?;
    while header.status.is_informational() {
        header = http
            .read_resp_header_parts()
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = http.read_body_ref().await.map_err(|e| e.to_string())? {
        if buf.len() + chunk.len() > MAX_APP_BODY {
            return Err(format!("answer larger than {MAX_APP_BODY} bytes"));
        }
        buf.extend_from_slice(chunk);
    }
    http.shutdown().await;
    Ok((*header, buf.freeze()))
}

/// The login as the app would have received it through the proxy: same method, path, headers
/// and body (the caller adds the forwarding headers, as the proxy does).
pub fn login_request(
    orig: &RequestHeader,
    body_len: usize,
) -> pingora_error::Result<RequestHeader> {
    let mut req = orig.clone();
    req.set_version(http::Version::HTTP_11);
    for h in HOP_BY_HOP {
        req.remove_header(h);
    }
    req.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    req.insert_header(http::header::CONNECTION, "close")?;
    Ok(req)
}

/// The logout of `cookie=value` at `path`, for the background worker.
pub fn logout_request(
    method: Option<&Method>,
    path: &str,
    host: Option<HeaderValue>,
    cookie: &str,
) -> pingora_error::Result<RequestHeader> {
    let method = method.cloned().unwrap_or(Method::GET);
    let mut req = RequestHeader::build(method, path.as_bytes(), None)?;
    if let Some(h) = host {
        req.insert_header(http::header::HOST, h)?;
    }
    req.insert_header(http::header::COOKIE, cookie)?;
    req.insert_header(http::header::CONTENT_LENGTH, "0")?;
    req.insert_header(http::header::CONNECTION, "close")?;
    Ok(req)
}

/// Writes the app's answer as the app gave it (hop-by-hop headers aside).
pub async fn relay(
    s: &mut Session,
    mut header: ResponseHeader,
    body: Bytes,
) -> pingora_error::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn logout_to(addr: std::net::SocketAddr) -> Logout {
        let req = logout_request(None, "/logout", None, "SID=abc").unwrap();
        Logout {
            peer: HttpPeer::new(addr, false, String::new()),
            product: "crm".into(),
            req,
        }
    }

    #[tokio::test]
    async fn logouts_reach_the_app_through_the_worker_and_failures_are_counted() {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = app.local_addr().unwrap();
        let client = AppClient::new();
        client.logout(logout_to(addr));
        let (mut conn, _) = app.accept().await.unwrap();
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request's end");
            seen.extend_from_slice(&buf[..n]);
        }
        let seen = String::from_utf8_lossy(&seen).to_lowercase();
        assert!(seen.starts_with("get /logout http/1.1"), "{seen}");
        assert!(seen.contains("cookie: sid=abc"), "{seen}");
        conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        drop(conn);
        // Nothing listens where the next one goes: counted as failed.
        drop(app);
        client.logout(logout_to(addr));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.failures() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "failure not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.failures(), 1);
    }
}
