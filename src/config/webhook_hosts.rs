//! Which hosts webhooks may reach (`settings.webhooks.allow_hosts`): only
//! public addresses unless a host is allowed by name. Delivery's resolver
//! and redirect check apply it; validation and `simulate` ask what it
//! refuses before any DNS lookup, so what they show is what delivery does.

use std::net::IpAddr;

/// Whether `host` is allowed by name.
pub fn is_allowed(host: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| a.eq_ignore_ascii_case(host))
}

/// Why the guard would refuse `url` whatever DNS says: a literal address
/// that is not public, or a `localhost` name (always loopback), when the
/// host is not in `allow`. Validation and simulation ask this, so what they
/// show is what delivery does.
pub fn refused_without_dns(url: &str, allow: &[String]) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if let Some(why) = refused_literal(&url, allow) {
        return Some(why);
    }
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    let loopback_name = host == "localhost" || host.ends_with(".localhost");
    (loopback_name && !is_allowed(&host, allow)).then(|| {
        format!("{host} is a loopback address; add it to settings.webhooks.allow_hosts to call it")
    })
}

/// A URL whose host is an IP literal (no DNS to guard) that is not public.
pub fn refused_literal(url: &reqwest::Url, allow: &[String]) -> Option<String> {
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    (!is_allowed(host, allow) && !is_public(ip)).then(|| {
        format!("{host} is a private, loopback or link-local address; add it to settings.webhooks.allow_hosts to call it")
    })
}

/// Whether an address is on the public internet: not loopback, private,
/// link-local (which holds the cloud metadata endpoint), shared, reserved,
/// benchmarking, IETF protocol assignments, unique or site local,
/// multicast or unspecified; IPv6 forms that carry an IPv4 address
/// (mapped, compatible, translated, NAT64, 6to4) are judged by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0)
        }
    }
}

/// The IPv4 address an IPv6 address stands for, in the forms a packet to
/// it can reach an IPv4 host by: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_loopback() && !v6.is_unspecified() => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(std::net::Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::169.254.169.254",
            "::ffff:0:10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "fec0::1",
            "240.0.0.1",
            "255.255.255.254",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "198.20.0.1",
            "192.0.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn refusals_known_before_dns_are_named() {
        let allow = ["127.0.0.1".to_owned()];
        assert!(refused_without_dns("http://localhost:9000/x", &[]).is_some());
        assert!(refused_without_dns("http://10.1.2.3/x", &[]).is_some());
        assert!(refused_without_dns("http://127.0.0.1:9/x", &allow).is_none());
        assert!(refused_without_dns("https://hooks.slack.com/x", &[]).is_none());
        assert!(refused_without_dns("not a url", &[]).is_none());
    }

    #[test]
    fn literals_are_refused_unless_allowed() {
        let url = reqwest::Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(refused_literal(&url, &[]).is_some());
        let local = reqwest::Url::parse("http://127.0.0.1:9/x").unwrap();
        assert!(refused_literal(&local, &["127.0.0.1".to_owned()]).is_none());
        let v6 = reqwest::Url::parse("http://[::1]:9/x").unwrap();
        assert!(refused_literal(&v6, &[]).is_some());
    }
}
