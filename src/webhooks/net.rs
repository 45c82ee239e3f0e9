//! Where a webhook may be sent, and the HTTP client that sends it: per-attempt timeouts, no
//! redirects, no proxy, and — unless `webhooks.allow_private_networks` — no private, loopback,
//! link-local or otherwise non-public destination. The check is made on the address actually
//! connected to: the client's DNS resolver ([`PublicOnly`]) drops non-public addresses from
//! every lookup at connect time, so a name that resolved to a public address when the endpoint
//! was registered and to `127.0.0.1` later (DNS rebinding) is still refused; an IP-literal URL
//! (which is never resolved) is checked by [`check_url`] before each attempt.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::WebhooksSettings;

/// Whether an address is one a webhook may reach when private networks are not allowed: the
/// IANA special-purpose registries ([`super::special_purpose`]), for URL literals and for every
/// address a name resolves to at connect time.
pub fn is_public(ip: IpAddr) -> bool {
    super::special_purpose::is_global(ip)
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
                // The team reads this error: it names no address (what an internal name
                // resolves to is the operator's business; the log has it at debug level).
                tracing::debug!(%host, addresses = ?all, "webhook host resolves to no public address");
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses (none \
                     globally reachable); refused (webhooks.allow_private_networks is off)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// `text` with every IP address in it replaced by `<address>`, except `own`, the URL's own host
/// (the team wrote it): an attempt's error goes to the team, and must not tell what a name
/// resolves to, whatever layer (resolver, connector, TLS) put the address there.
pub fn without_addresses(text: &str, own: Option<&str>) -> String {
    let own = own.map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_addr_char) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let len = run.find(|c: char| !is_addr_char(c)).unwrap_or(run.len());
        let token = &run[..len];
        // `…to 10.0.0.1.` or `10.0.0.1:443`: the address without its trailing punctuation or port.
        let core = token.trim_end_matches(['.', ':']);
        let addr = core
            .parse::<IpAddr>()
            .ok()
            .or_else(|| core.parse::<SocketAddr>().ok().map(|s| s.ip()));
        // A whole word only (not the `::E` of `hyper::Error`), with a digit in it.
        let word = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let whole = word(out.chars().last()) && word(run[len..].chars().next());
        let addr = addr.filter(|_| whole && core.contains(|c: char| c.is_ascii_digit()));
        match addr {
            Some(ip)
                if own != Some(core) && own.and_then(|o| o.parse::<IpAddr>().ok()) != Some(ip) =>
            {
                out.push_str("<address>");
                out.push_str(&token[core.len()..]);
            }
            _ => out.push_str(token),
        }
        rest = &run[len..];
    }
    out.push_str(rest);
    out
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

    #[test]
    fn ipv6_special_purpose_literals_are_refused() {
        for url in [
            "http://[::127.0.0.1]/hook",
            "http://[::ffff:0:7f00:1]/hook",
            "http://[100::1]/hook",
            "http://[2001::7f00:1]/hook",
            "http://[64:ff9b::a9fe:a9fe]/hook",
            "http://[2002:a9fe:a9fe::1]/hook",
        ] {
            assert!(
                matches!(check_url(url, false), Err(UrlProblem::PrivateAddress(_))),
                "{url}"
            );
        }
        assert!(check_url("http://[2606:4700:4700::1111]/hook", false).is_ok());
    }

    #[test]
    fn errors_lose_every_address_but_the_urls_own() {
        let e = "error sending request for url (http://[::1]:9/h): tcp connect error: 10.0.0.8:443 refused; also fe80::1%eth0 and 127.0.0.1.";
        let s = without_addresses(e, Some("[::1]"));
        assert!(s.contains("[::1]:9"), "{s}");
        assert!(
            !s.contains("10.0.0.8") && !s.contains("fe80::1") && !s.contains("127.0.0.1"),
            "{s}"
        );
        assert!(
            s.contains("error: <address> refused") && s.ends_with("<address>."),
            "{s}"
        );
        assert_eq!(
            without_addresses("deadline has elapsed", None),
            "deadline has elapsed"
        );
        assert_eq!(
            without_addresses("HTTP 1.1 answer 502", None),
            "HTTP 1.1 answer 502"
        );
        assert_eq!(
            without_addresses("hyper::Error(Connect)", None),
            "hyper::Error(Connect)"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_loopback_addresses() {
        let err = match PublicOnly.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("private"), "{err}");
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    }
}
