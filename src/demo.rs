//! A tiny legacy-style web app for the demo: a login form, a session cookie, a logout link.
//! It knows nothing of licenses; seatgate in front of it does. Any user name works with the
//! password `demo`; other passwords are refused (and, through the gateway, cost no seat).

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use dashmap::DashMap;

pub const COOKIE: &str = "LEGACYSESSION";

#[derive(Default)]
pub struct DemoApp {
    sessions: DashMap<String, String>,
}

fn page(status: StatusCode, body: String, extra: &[(&str, String)]) -> Response<Vec<u8>> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Legacy CRM</title></head>\
<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">{body}</body></html>"
    )
    .into_bytes();
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-length", html.len());
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(html).unwrap_or_default()
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Vec<u8>> {
    let mut b = Response::builder().status(StatusCode::FOUND).header("location", to).header("content-length", 0);
    if let Some(c) = cookie {
        b = b.header("set-cookie", c);
    }
    b.body(Vec::new()).unwrap_or_default()
}

impl DemoApp {
    fn user_of(&self, s: &ServerSession) -> Option<String> {
        let v = crate::policy::cookies::request_cookie(&s.req_header().headers, COOKIE)?;
        self.sessions.get(v).map(|u| u.clone())
    }
}

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/login") => {
                let notice = s.req_header().uri.query().filter(|q| q.contains("seatgate_notice")).map_or("", |_| {
                    "<p style=\"color:#a00\">Your previous session has ended. Please log in again.</p>"
                });
                page(
                    StatusCode::OK,
                    format!(
                        "<h1>Legacy CRM</h1>{notice}<form method=\"post\" action=\"/login\">\
<label>User <input name=\"username\" autofocus></label> <label>Password <input name=\"password\" type=\"password\"></label> \
<button>Log in</button></form><p>Password: <code>demo</code></p>"
                    ),
                    &[],
                )
            }
            (Method::POST, "/login") => {
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = s.read_request_body().await {
                    body.extend_from_slice(&chunk);
                    if body.len() > 64 * 1024 {
                        break;
                    }
                }
                let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
                let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                let (user, password) = (get("username"), get("password"));
                if user.is_empty() || password != "demo" {
                    return page(StatusCode::UNAUTHORIZED, "<h1>Login failed</h1><p><a href=\"/login\">Try again</a></p>".into(), &[]);
                }
                let sid = format!("{:032x}", rand::random::<u128>());
                self.sessions.insert(sid.clone(), user);
                redirect("/", Some(format!("{COOKIE}={sid}; Path=/; HttpOnly")))
            }
            (_, "/logout") => {
                if let Some(v) = crate::policy::cookies::request_cookie(&s.req_header().headers, COOKIE) {
                    self.sessions.remove(v);
                }
                redirect("/login", Some(format!("{COOKIE}=; Path=/; Max-Age=0")))
            }
            (Method::GET, "/") => match self.user_of(s) {
                Some(u) => page(
                    StatusCode::OK,
                    format!(
                        "<h1>Welcome, {}</h1><p>You hold one of the licenses.</p><p><a href=\"/logout\">Log out</a></p>",
                        crate::responses::escape_html(&u)
                    ),
                    &[],
                ),
                None => redirect("/login", None),
            },
            _ => page(StatusCode::NOT_FOUND, "<h1>Not found</h1>".into(), &[]),
        }
    }
}
