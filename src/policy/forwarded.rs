//! The forwarding headers the app gets. A client may send any `X-Forwarded-For` or
//! `X-Forwarded-Proto` it likes; only a configured proxy in front of the gateway
//! (`trusted_proxies`) is believed, so an app that trusts the left-most address, or
//! `https` for its Secure cookies, is never told what a client chose.

use ipnet::IpNet;
use std::net::IpAddr;

/// `X-Forwarded-For` and `X-Forwarded-Proto` for the upstream request. `prev` gives the
/// request's own (`X-Forwarded-For`, `X-Forwarded-Proto`); it is asked only when the peer is
/// a trusted proxy (two header lookups saved on every other request).
pub fn forwarded<'a>(
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    prev: impl FnOnce() -> (Option<&'a str>, Option<&'a str>),
    tls: bool,
) -> (Option<String>, &'static str) {
    let believed = peer.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    let (prev_for, prev_proto) = if believed { prev() } else { (None, None) };
    let proto = match prev_proto.map(str::trim) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if tls => "https",
        _ => "http",
    };
    let xff = peer.map(|ip| {
        let prev = prev_for;
        let mut v = String::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(p) = prev {
            v.push_str(p);
            v.push_str(", ");
        }
        push_ip(&mut v, ip);
        v
    });
    (xff, proto)
}

/// Appends `ip` in its usual text form. IPv4 by hand: this runs on every proxied request,
/// and `Display` through the formatting machinery cost a third of the forwarding headers.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_are_believed() {
        let lb: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            forwarded(
                Some(client),
                &lb,
                || (Some("1.2.3.4"), Some("https")),
                false
            ),
            (Some("203.0.113.9".into()), "http"),
            "a client's own forwarding headers are replaced"
        );
        assert_eq!(
            forwarded(
                Some(proxy),
                &lb,
                || (Some("198.51.100.7"), Some("HTTPS")),
                false
            ),
            (Some("198.51.100.7, 10.1.2.3".into()), "https")
        );
        assert_eq!(
            forwarded(Some(proxy), &lb, || (None, Some("gopher")), true),
            (Some("10.1.2.3".into()), "https")
        );
        assert_eq!(
            forwarded(None, &lb, || (Some("x"), None), false),
            (None, "http")
        );
        // Not asked of a client that is no trusted proxy: what it sent is never read.
        assert_eq!(
            forwarded(Some(client), &lb, || panic!("read"), true),
            (Some("203.0.113.9".into()), "https")
        );
    }
}
