//! The floor seatgate is measured against (benches/load.sh): a pingora 0.9 proxy with the
//! same server settings (one thread, `work_stealing: false`, jemalloc) and no policy at all.
//! `/answer` and paths under `/full/` (the same request line as seatgate's failing check) are
//! written by the proxy itself, like a check denial; anything else is proxied.
//! Usage: bare LISTEN UPSTREAM
//!
//! Switches, for measuring which of pingora's per-request costs a proxy can avoid from the
//! outside (`benches/instructions.sh 20000 bare`; off unless set):
//! `BARE_NO_MODULES=1` adds no downstream module (pingora adds a disabled compression
//! module by default; seatgate adds none), `BARE_PEER_ONCE=1` clones one peer built at start
//! instead of building one per request (its address parsed each time), `BARE_TIMEOUTS=1`
//! sets pingora's read timeout and keep-alive timeout on every request (a timer bare pingora
//! otherwise never registers; seatgate did this until it kept the idle bound on the
//! connection), `BARE_FORWARDED=1` gives the app the `X-Forwarded-For` and `-Proto` headers
//! seatgate gives it, inserted the same way. Building with `--features bench-quiet-log`
//! compiles pingora's debug and trace lines out (`log`'s `release_max_level_info`).

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Bare {
    upstream: String,
    no_modules: bool,
    peer: Option<HttpPeer>,
    timeouts: bool,
    forwarded: bool,
}

fn switch(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, modules: &mut pingora_core::modules::http::HttpModules) {
        if !self.no_modules {
            modules.add_module(
                pingora_core::modules::http::compression::ResponseCompressionBuilder::enable(0),
            );
        }
    }

    async fn request_filter(&self, s: &mut Session, _: &mut ()) -> pingora_error::Result<bool> {
        if self.timeouts {
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
            s.set_keepalive(Some(60));
        }
        let path = s.req_header().uri.path();
        if path != "/answer" && !path.starts_with("/full/") {
            return Ok(false);
        }
        let body = Bytes::from_static(b"the user name or password is invalid");
        let mut h = ResponseHeader::build(401, Some(2))?;
        h.insert_header("content-type", "text/plain")?;
        h.insert_header("content-length", body.len().to_string())?;
        s.write_response_header(Box::new(h), false).await?;
        s.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        req: &mut pingora_http::RequestHeader,
        _: &mut (),
    ) -> pingora_error::Result<()> {
        if self.forwarded {
            let ip = s
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string());
            if let Some(ip) = ip {
                req.insert_header(Bytes::from_static(b"X-Forwarded-For"), ip)?;
            }
            let proto = http::HeaderValue::from_static("http");
            req.insert_header(Bytes::from_static(b"X-Forwarded-Proto"), proto)?;
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _: &mut Session,
        _: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        if let Some(p) = &self.peer {
            return Ok(Box::new(p.clone()));
        }
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = match args.as_slice() {
        [_, l, u] => (l.clone(), u.clone()),
        _ => {
            eprintln!("usage: bare LISTEN UPSTREAM");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: std::env::var("THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1),
        // WORK_STEALING=1: the same switch as seatgate's `work_stealing` (benches/load.sh).
        work_stealing: std::env::var("WORK_STEALING").is_ok_and(|v| v == "1"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let bare = Bare {
        no_modules: switch("BARE_NO_MODULES"),
        peer: switch("BARE_PEER_ONCE")
            .then(|| HttpPeer::new(upstream.as_str(), false, String::new())),
        timeouts: switch("BARE_TIMEOUTS"),
        forwarded: switch("BARE_FORWARDED"),
        upstream,
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
