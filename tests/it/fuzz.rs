//! Issue 13: the parsers hostile input reaches, fed arbitrary bytes (proptest, stable Rust,
//! shrinking). CI runs a bounded smoke (`SEATGATE_FUZZ_CASES`, default 256 per target);
//! `SEATGATE_FUZZ_CASES=20000 cargo nextest run --test it fuzz` runs a long campaign. A crash
//! found here becomes a named regression test below the targets.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use proptest::prelude::*;
use seatgate::config::UserSource;
use seatgate::policy::{classify, cookies, hostile, queue, selfserve};
use seatgate::presence::{Encoding, Injector};
use std::io::Write;

fn cases() -> u32 {
    std::env::var("SEATGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Header values as a client can send them (any bytes a header value may hold).
fn header_value() -> impl Strategy<Value = HeaderValue> {
    // Every byte a header value may hold: visible ASCII, tab, space and obs-text.
    let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    proptest::collection::vec(byte, 0..200)
        .prop_map(|b| HeaderValue::from_bytes(&b).expect("only bytes a header value may hold"))
}

fn headers_named(name: &'static str) -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec(header_value(), 0..4).prop_map(move |vs| {
        let mut h = HeaderMap::new();
        for v in vs {
            h.append(HeaderName::from_static(name), v);
        }
        h
    })
}

const CONFIG: &str = r#"
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9090
  users:
    - { name: admin, password_hash: "$argon2id$v=19$m=19456,t=2,p=1$fbgqBNuHaT+62XHbImpBpg$NZb2rJEyaUxwXGh20TbFWW8bYfciISkQzuu4iECG/o8", role: super }
store: { kind: embedded, path: /tmp/x.redb }
products:
  - name: crm
    upstream: 127.0.0.1:8000
    session: { cookie: SID, idle_timeout: 20m, max_lifetime: 12h, presence_timeout: 90s }
    login: { path: /login, method: POST, user: { form_field: username } }
    logout: { path: /logout }
    seats: 2
    clients:
      - { kind: mobile, match: { path_prefix: /m }, mode: check, on_full: { status: 401, body: "no" } }
"#;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(src in ".{0,400}") {
        let _ = seatgate::config::parse(&src);
    }

    #[test]
    fn config_mutations_are_ok_or_a_located_error(at in 0usize..CONFIG.len(), junk in "[ -~\n]{0,12}", cut in 0usize..8) {
        let mut src = CONFIG.to_string();
        let at = (0..=at).rev().find(|i| src.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(src.len());
        let end = (end..=src.len()).find(|i| src.is_char_boundary(*i)).unwrap_or(src.len());
        src.replace_range(at..end, &junk);
        if let Err(e) = seatgate::config::parse(&src) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }

    #[test]
    fn request_cookies_never_panic(h in headers_named("cookie")) {
        let _ = cookies::request_session(&h, "SID");
        let _ = cookies::request_cookie(&h, "SID");
    }

    /// The session cookie is the one the `cookie` crate's own split and parse find, on
    /// headers made of pairs that tell apart a name and its look-alikes.
    #[test]
    fn the_session_cookie_is_found_as_the_cookie_crate_finds_it(
        pairs in proptest::collection::vec((
            proptest::sample::select(vec!["SID", " SID", "SID ", "SIDX", "XSID", "sid", "", "a"]),
            proptest::sample::select(vec!["=", " = ", "==", "", "=\"", "\t="]),
            "[!-:<-~ ]{0,6}",
        ), 0..6),
        glue in proptest::sample::select(vec![";", "; ", " ;", ";;"]),
    ) {
        let s = pairs.iter().map(|(n, e, v)| format!("{n}{e}{v}")).collect::<Vec<_>>().join(glue);
        let Ok(v) = HeaderValue::from_str(&s) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, v);
        let want = cookie::Cookie::split_parse(s.as_str())
            .flatten()
            .find(|c| c.name() == "SID" && !c.value().is_empty())
            .map(|c| c.value().to_string());
        prop_assert_eq!(cookies::request_cookie(&h, "SID").map(str::to_string), want, "{:?}", s);
    }

    #[test]
    fn set_cookie_never_panics(vs in proptest::collection::vec(".{0,120}", 0..4), now in any::<i64>()) {
        let refs: Vec<&str> = vs.iter().map(String::as_str).collect();
        let _ = cookies::set_cookie_word(&refs, "SID", now);
    }

    #[test]
    fn login_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), json in any::<bool>(), h in headers_named("x-user")) {
        let mut headers = h.clone();
        let ct = if json { "application/json" } else { "application/x-www-form-urlencoded" };
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        let form = UserSource::Form("username".into());
        if let Ok(Some(u)) = classify::login_user(&form, &headers, &body) {
            prop_assert!(!u.is_empty() && !u.chars().any(char::is_control));
        }
        let hdr = UserSource::Header(HeaderName::from_static("x-user"));
        let _ = classify::login_user(&hdr, &h, &body);
    }

    #[test]
    fn json_logins_with_a_string_user_are_read(user in "[a-zA-Z0-9._@-]{1,40}", extra in "[a-z]{1,8}") {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = serde_json::json!({ extra.clone(): 1, "username": user.clone() }).to_string();
        let form = UserSource::Form("username".into());
        prop_assert_eq!(classify::login_user(&form, &h, body.as_bytes()), Ok(Some(user)));
    }

    #[test]
    fn normalised_paths_are_canonical(raw in "(/|[a-zA-Z.%;]|%2[eE]|%6[cC]|\\.\\.|//){0,30}") {
        let n = classify::normalize_path(&raw);
        prop_assert!(n.starts_with('/'), "{:?} -> {:?}", raw, n);
        prop_assert!(!n.contains("//"), "{:?} -> {:?}", raw, n);
        prop_assert!(!n.split('/').any(|s| s == "." || s == ".."), "{:?} -> {:?}", raw, n);
        prop_assert!(!n.contains(';'), "{:?} -> {:?}", raw, n);
        let again = classify::normalize_path(&n).into_owned();
        prop_assert_eq!(again.as_str(), n.as_ref(), "not idempotent for {:?}", raw);
    }

    #[test]
    fn hostile_heads_never_panic(h in headers_named("transfer-encoding"), raw in proptest::collection::vec(any::<u8>(), 0..300), len in 0usize..20000) {
        let _ = hostile::inspect(Version::HTTP_11, len, &h, Some(&raw), hostile::Limits::default());
    }

    #[test]
    fn app_acceptance_never_panics(loc in ".{0,80}", code in 100u16..600) {
        let s = StatusCode::from_u16(code).unwrap();
        let _ = classify::app_accepts_session(s, Some(&loc), "/login", false);
    }

    /// The client classifier as the proxy runs it (normalise, product, client kind, action) on
    /// arbitrary request lines and headers: an answer for each, never a panic.
    #[test]
    fn the_classifier_answers_every_request(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), "[A-Z]{1,10}"],
        target in "(/|[a-zA-Z0-9._~;=-]|%[0-9a-fA-F]{0,2}|\\.\\.|//){0,40}",
        host in "[a-z0-9.:-]{0,30}",
        auth in headers_named("authorization"),
        cookie in any::<bool>(),
    ) {
        let (Ok(method), Ok(uri)) = (http::Method::from_bytes(method.as_bytes()), target.parse::<http::Uri>()) else {
            return Ok(());
        };
        let mut headers = auth;
        if let Ok(h) = HeaderValue::from_str(&host) {
            headers.insert(http::header::HOST, h);
        }
        let action = classify_as_the_proxy_does(&method, &uri, &headers, cookie);
        prop_assert!(action.is_some(), "the one product takes every path");
    }

    /// A login spelled any way the app would still read as its login path (percent-encoded
    /// letters, dot segments, doubled slashes, path parameters) is classified as a login.
    #[test]
    fn a_login_is_a_login_however_it_is_spelled(spelled in login_spelling()) {
        let uri: http::Uri = spelled.parse().unwrap();
        let action = classify_as_the_proxy_does(&http::Method::POST, &uri, &HeaderMap::new(), false);
        prop_assert_eq!(action, Some(classify::Action::Login), "{}", spelled);
    }

    #[test]
    fn forged_self_service_tokens_are_refused(token in ".{0,300}") {
        let key = selfserve::TokenKey::from_bytes([7; 32]);
        prop_assert!(selfserve::verify(&key, &token, 0).is_err());
    }

    #[test]
    fn ticket_cookies_never_panic_and_only_their_own_shape_parses(
        h in headers_named("cookie"),
        pool in "[a-zA-Z0-9 _-]{1,20}",
        raw in ".{0,300}",
    ) {
        // Whatever a Cookie header holds, reading a ticket out of it never panics, and a
        // value that parses names a pool in the ticket's own shape (hex, a dot, 32 hex).
        if let Some(v) = cookies::request_cookie(&h, queue::TICKET_COOKIE) {
            if let Some(p) = queue::ticket_pool(v) {
                prop_assert_eq!(v.split_once('.').map(|(_, r)| r.len()), Some(32));
                prop_assert!(!p.is_empty());
            }
        }
        let _ = queue::ticket_pool(&raw);
        let t = queue::new_ticket(&pool);
        prop_assert_eq!(queue::ticket_pool(&t), Some(pool.clone()));
        // One character changed anywhere is another ticket or none, never a panic.
        for i in 0..t.len() {
            let mut m = t.clone().into_bytes();
            m[i] = if m[i] == b'0' { b'g' } else { b'0' };
            if let Ok(m) = String::from_utf8(m) {
                let _ = queue::ticket_pool(&m);
            }
        }
    }

    #[test]
    fn identity_injection_adds_the_tag_once(html in ".{0,2000}", cuts in proptest::collection::vec(0usize..2000, 0..6)) {
        let tag = Bytes::from_static(b"<script id=sg-fuzz-tag></script>");
        let out = feed_in_chunks(Injector::new(Encoding::Identity, tag.clone()), html.as_bytes(), &cuts);
        prop_assert_eq!(remove_once(&out, &tag), html.as_bytes().to_vec());
    }

    #[test]
    fn gzip_injection_round_trips(html in ".{0,2000}", cuts in proptest::collection::vec(0usize..400, 0..6)) {
        let tag = Bytes::from_static(b"<script id=sg-fuzz-tag></script>");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(html.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        let out = feed_in_chunks(Injector::new(Encoding::Gzip, tag.clone()), &body, &cuts);
        let mut d = flate2::write::MultiGzDecoder::new(Vec::new());
        d.write_all(&out).unwrap();
        let plain = d.finish().unwrap();
        prop_assert_eq!(remove_once(&plain, &tag), html.as_bytes().to_vec());
    }

    #[test]
    fn garbage_compressed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), enc in 0u8..3) {
        let enc = [Encoding::Gzip, Encoding::Deflate, Encoding::Brotli][enc as usize];
        let mut inj = Injector::new(enc, Bytes::from_static(b"<script></script>"));
        let _ = inj.feed(&body, false);
        let _ = inj.feed(&[], true);
    }
}

/// `/login` the ways a client may write it and an app still reads it as `/login`.
fn login_spelling() -> impl Strategy<Value = String> {
    let letter = |c: char| {
        prop_oneof![
            Just(c.to_string()),
            Just(format!("%{:02x}", c as u8)),
            Just(format!("%{:02X}", c as u8)),
        ]
    };
    let word = (
        letter('l'),
        letter('o'),
        letter('g'),
        letter('i'),
        letter('n'),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}"));
    let before = prop_oneof![
        Just(String::new()),
        Just("/.".to_string()),
        Just("/".to_string()),
        Just("/x/..".to_string()),
        Just("/%2e".to_string()),
        Just("/a/b/../..".to_string()),
        Just("/a/%2E%2e".to_string()),
    ];
    let after = prop_oneof![
        Just(String::new()),
        Just(";jsessionid=0A1B".to_string()),
        Just(";x".to_string()),
    ];
    (before, word, after).prop_map(|(b, w, a)| format!("{b}/{w}{a}"))
}

/// The proxy's classification steps (src/proxy: normalise, product, client, mode, action).
fn classify_as_the_proxy_does(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    has_cookie: bool,
) -> Option<classify::Action> {
    let cfg = seatgate::config::parse(CONFIG).unwrap();
    let path = classify::normalize_path(uri.path());
    let facts = classify::RequestFacts::new(method, uri, headers).with_path(&path);
    let p = &cfg.products[classify::product_for(&cfg, &facts)?];
    let mode =
        classify::client_for(p, &facts).map_or(seatgate::config::Mode::Hold, |i| p.clients[i].mode);
    Some(classify::action(
        p,
        mode,
        &facts,
        has_cookie,
        classify::has_credentials(headers),
    ))
}

fn feed_in_chunks(mut inj: Injector, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        out.extend_from_slice(&inj.feed(&body[from..c], false).unwrap());
        from = c;
    }
    out.extend_from_slice(&inj.feed(&body[from..], true).unwrap());
    out
}

fn remove_once(out: &[u8], tag: &[u8]) -> Vec<u8> {
    let i = out
        .windows(tag.len())
        .position(|w| w == tag)
        .expect("the tag was injected");
    let mut v = out[..i].to_vec();
    v.extend_from_slice(&out[i + tag.len()..]);
    v
}
