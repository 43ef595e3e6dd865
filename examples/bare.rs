//! The floor seatgate is measured against (benches/load.sh): a pingora 0.9 proxy with the
//! same server settings (one thread, `work_stealing: false`, jemalloc) and no policy at all.
//! `/answer` and paths under `/full/` (the same request line as seatgate's failing check) are
//! written by the proxy itself, like a check denial; anything else is proxied.
//! Usage: bare LISTEN UPSTREAM

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
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, s: &mut Session, _: &mut ()) -> pingora_error::Result<bool> {
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

    async fn upstream_peer(
        &self,
        _: &mut Session,
        _: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
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
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
