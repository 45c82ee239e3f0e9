//! Where a webhook may be sent, and the HTTP client that sends it: per-attempt timeouts, no
//! redirects, no proxy, and — unless `webhooks.allow_private_networks` — no private, loopback,
//! link-local or otherwise non-public destination. The check is made on the address actually
//! connected to: the client's DNS resolver ([`PublicOnly`]) drops non-public addresses from
//! every lookup at connect time, so a name that resolved to a public address when the endpoint
//! was registered and to `127.0.0.1` later (DNS rebinding) is still refused; an IP-literal URL
//! (which is never resolved) is checked by [`check_url`] before each attempt.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::WebhooksSettings;

/// Whether an address is one a webhook may reach when private networks are not allowed.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local (deprecated)
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // 64:ff9b::/96 NAT64 and 2002::/16 6to4 embed IPv4 addresses
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                // 2001:db8::/32 documentation
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        // 100.64.0.0/10 shared (carrier-grade NAT)
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 192.0.0.0/24 IETF protocol assignments
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        // 198.18.0.0/15 benchmarking
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        // 240.0.0.0/4 reserved
        || o[0] >= 240)
}

/// Why a URL cannot be an endpoint (or be sent to now).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    #[error("must not contain credentials (user:password@)")]
    Credentials,
    #[error(
        "{0} is a private, loopback or link-local address (webhooks.allow_private_networks is off)"
    )]
    PrivateAddress(IpAddr),
}

/// Checks a URL's form and, unless private networks are allowed, that it is not an IP literal
/// of a non-public address. Host names are checked when they are resolved ([`PublicOnly`]).
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, UrlProblem> {
    let u = reqwest::Url::parse(url).map_err(|_| UrlProblem::NotHttp)?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(UrlProblem::NotHttp);
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(UrlProblem::Credentials);
    }
    if !allow_private {
        // The parser has normalized IP literals (`http://2130706433/` is 127.0.0.1).
        let host = u.host_str().unwrap_or_default();
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) = ip.filter(|ip| !is_public(*ip)) {
            return Err(UrlProblem::PrivateAddress(ip));
        }
    }
    Ok(u)
}

/// A resolver that keeps only public addresses, and fails a lookup that leaves none.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused = all.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses ({refused}); \
                     refused (webhooks.allow_private_networks is off)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The client every delivery attempt uses.
pub fn client(cfg: &WebhooksSettings) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .user_agent(concat!("snapgate-webhooks/", env!("CARGO_PKG_VERSION")));
    if !cfg.allow_private_networks {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_for_form_and_private_literals() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert_eq!(
            check_url("ftp://hooks.example.com/x", false),
            Err(UrlProblem::NotHttp)
        );
        assert_eq!(check_url("not a url", false), Err(UrlProblem::NotHttp));
        assert_eq!(
            check_url("https://u:p@hooks.example.com/", false),
            Err(UrlProblem::Credentials)
        );
        assert!(matches!(
            check_url("http://127.0.0.1:9000/hook", false),
            Err(UrlProblem::PrivateAddress(_))
        ));
        assert!(matches!(
            check_url("http://[::1]:9000/hook", false),
            Err(UrlProblem::PrivateAddress(_))
        ));
        assert!(matches!(
            check_url("http://2130706433/hook", false),
            Err(UrlProblem::PrivateAddress(_))
        ));
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_loopback_addresses() {
        let err = match PublicOnly.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("private"), "{err}");
    }
}
