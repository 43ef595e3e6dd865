//! The forwarding headers the app gets. A client may send any `X-Forwarded-For` or
//! `X-Forwarded-Proto` it likes; only a configured proxy in front of the gateway
//! (`trusted_proxies`) is believed, so an app that trusts the left-most address, or
//! `https` for its Secure cookies, is never told what a client chose.

use ipnet::IpNet;
use std::net::IpAddr;

/// `X-Forwarded-For` and `X-Forwarded-Proto` for the upstream request.
pub fn forwarded(
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    prev_for: Option<&str>,
    prev_proto: Option<&str>,
    tls: bool,
) -> (Option<String>, String) {
    let believed = peer.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    let own_proto = if tls { "https" } else { "http" };
    let proto = match prev_proto.map(str::trim) {
        Some(p)
            if believed && (p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https")) =>
        {
            p.to_ascii_lowercase()
        }
        _ => own_proto.to_string(),
    };
    let xff = match (peer, prev_for.filter(|_| believed)) {
        (Some(ip), Some(prev)) => Some(format!("{prev}, {ip}")),
        (Some(ip), None) => Some(ip.to_string()),
        (None, _) => None,
    };
    (xff, proto)
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
            forwarded(Some(client), &lb, Some("1.2.3.4"), Some("https"), false),
            (Some("203.0.113.9".into()), "http".into()),
            "a client's own forwarding headers are replaced"
        );
        assert_eq!(
            forwarded(Some(proxy), &lb, Some("198.51.100.7"), Some("HTTPS"), false),
            (Some("198.51.100.7, 10.1.2.3".into()), "https".into())
        );
        assert_eq!(
            forwarded(Some(proxy), &lb, None, Some("gopher"), true),
            (Some("10.1.2.3".into()), "https".into())
        );
        assert_eq!(
            forwarded(None, &lb, Some("x"), None, false),
            (None, "http".into())
        );
    }
}
