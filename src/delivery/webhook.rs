//! Webhooks with reqwest: time limits always set, few redirects, Standard
//! Webhooks signatures, and an SSRF guard applied after DNS resolution (and
//! to every redirect), so a workflow cannot be pointed at the machine's own
//! services or the cloud metadata endpoint unless `allow_hosts` says so.

use super::retry::Failure;
use crate::config::workflows::Settings;
use crate::state::{Delivery, OutboxEntry};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// A client for one settings version.
pub struct WebhookClient {
    client: reqwest::Client,
    allow: Arc<Vec<String>>,
}

impl WebhookClient {
    /// A client honouring the settings' time limit and allowed hosts.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let allow = Arc::new(settings.webhook_allow_hosts.clone());
        let redirect_allow = allow.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match refused_literal(attempt.url(), &redirect_allow) {
                Some(why) => attempt.error(why),
                None => attempt.follow(),
            }
        });
        let client = reqwest::Client::builder()
            // A proxy from the environment would connect to the target for
            // us, past the guard's resolver: webhooks go direct.
            .no_proxy()
            .timeout(settings.webhook_timeout)
            .connect_timeout(settings.webhook_timeout.min(Duration::from_secs(10)))
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(WebhookClient { client, allow })
    }

    /// Makes the call of a webhook row; `now` is the signature's timestamp.
    pub async fn send(&self, row: &OutboxEntry, now: i64) -> Result<(), Failure> {
        let Delivery::Webhook {
            url,
            method,
            headers,
            body,
            secret,
        } = &row.delivery
        else {
            return Err(Failure::Permanent("not a webhook".to_owned()));
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::Permanent(format!("invalid URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::Permanent(format!("{url:?} is not an http(s) URL")));
        }
        if let Some(why) = refused_literal(&parsed, &self.allow) {
            return Err(Failure::Permanent(why));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| Failure::Permanent(format!("invalid method {method:?}")))?;
        let payload =
            serde_json::to_vec(body).map_err(|e| Failure::Permanent(format!("body: {e}")))?;
        let mut request = self
            .client
            .request(method, parsed)
            .header("content-type", "application/json")
            .header("webhook-id", &row.id)
            .header("idempotency-key", &row.id);
        for (name, value) in headers {
            let (name, value) = header(name, value)?;
            request = request.header(name, value);
        }
        if let Some(secret) = secret {
            let signature = sign(secret, &row.id, now, &payload);
            request = request
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature);
        }
        let response = request.body(payload).send().await.map_err(|e| {
            // The guard's refusal surfaces as a connect error; it will not change.
            match caused_by::<GuardRefusal>(&e) {
                Some(refusal) => Failure::Permanent(refusal.0.clone()),
                None => Failure::transient(format!("HTTP: {}", error_chain(&e))),
            }
        })?;
        classify(response.status(), response.headers())
    }
}

/// The SSRF guard's refusal of a name at DNS time, found again in the
/// request's error by type (never by its text).
#[derive(Debug)]
struct GuardRefusal(String);

impl std::fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuardRefusal {}

/// The first error of type `E` in `e`'s source chain.
fn caused_by<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A header from the workflow, checked here: a name or value HTTP cannot
/// carry (a line break, a space in the name) will never work, so it is a
/// permanent failure rather than a retried request error.
fn header(
    name: &str,
    value: &str,
) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), Failure> {
    let bad = |what: &str| Failure::Permanent(format!("header {name:?}: {what}"));
    let name_ok = reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad("not a valid header name"))?;
    let value_ok = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        bad("the value holds a line break or another character HTTP headers cannot carry")
    })?;
    Ok((name_ok, value_ok))
}

/// 2xx is done; 408, 429 and 5xx are worth another try (with the
/// receiver's `Retry-After`); anything else will not change.
fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    let reason = format!("HTTP {status}");
    let code = status.as_u16();
    if code == 408 || code == 429 || status.is_server_error() {
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(Failure::Transient {
            reason,
            retry_after,
        });
    }
    Err(Failure::Permanent(reason))
}

/// `v1,BASE64(HMAC-SHA256(key, "id.timestamp.body"))` (Standard Webhooks);
/// a `whsec_` secret is base64, any other is used as its UTF-8 bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Resolves names, keeping only public addresses for hosts not allowed.
struct GuardedResolver {
    allow: Arc<Vec<String>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = is_allowed(&host, &self.allow);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if usable.is_empty() {
                let why = format!(
                    "{host} resolves only to private, loopback or link-local addresses; add it to settings.webhooks.allow_hosts to call it"
                );
                return Err(Box::new(GuardRefusal(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

fn is_allowed(host: &str, allow: &[String]) -> bool {
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
fn refused_literal(url: &reqwest::Url, allow: &[String]) -> Option<String> {
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

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn headers_http_cannot_carry_are_permanent_failures() {
        assert!(header("x-deal", "42").is_ok());
        for (name, value) in [("x-deal", "a\r\nInjected: 1"), ("bad name", "v"), ("", "v")] {
            assert!(
                matches!(header(name, value), Err(Failure::Permanent(_))),
                "{name:?} {value:?}"
            );
        }
    }

    #[test]
    fn statuses_split_into_retry_and_give_up() {
        let none = reqwest::header::HeaderMap::new();
        assert!(classify(reqwest::StatusCode::OK, &none).is_ok());
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_GATEWAY, &none),
            Err(Failure::Transient { .. })
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::NOT_FOUND, &none),
            Err(Failure::Permanent(_))
        ));
        let mut later = reqwest::header::HeaderMap::new();
        later.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            classify(reqwest::StatusCode::TOO_MANY_REQUESTS, &later),
            Err(Failure::Transient {
                reason: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            })
        );
    }
}
