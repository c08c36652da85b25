//! Webhooks with reqwest: time limits always set, few redirects, Standard
//! Webhooks signatures, and an SSRF guard applied after DNS resolution (and
//! to every redirect), so a workflow cannot be pointed at the machine's own
//! services or the cloud metadata endpoint unless `allow_hosts` says so.

use super::retry::Failure;
use crate::causes::{caused_by, chain_text};
use crate::config::webhook_hosts::{is_allowed, is_public, refused_literal};
use crate::config::workflows::Settings;
use crate::state::{Delivery, OutboxEntry};
use lru::LruCache;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// URLs kept parsed.
const URLS_KEPT: usize = 256;

/// A client for one settings version.
pub struct WebhookClient {
    client: reqwest::Client,
    allow: Arc<Vec<String>>,
    /// URLs parsed lately: a rule's rows share their URL, and parsing it
    /// again (its host checked as an international name) for every call
    /// was 3% of the background thread under W1.
    urls: Mutex<LruCache<String, reqwest::Url>>,
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
        let urls = Mutex::new(LruCache::new(
            NonZeroUsize::new(URLS_KEPT).unwrap_or(NonZeroUsize::MIN),
        ));
        Ok(WebhookClient {
            client,
            allow,
            urls,
        })
    }

    /// `url` parsed, if it is an http(s) URL.
    fn parsed(&self, url: &str) -> Result<reqwest::Url, Failure> {
        // Nothing panics while holding it; a poisoned cache is still whole.
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parsed) = urls.get(url) {
            return Ok(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::Permanent(format!("invalid URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::Permanent(format!("{url:?} is not an http(s) URL")));
        }
        urls.put(url.to_owned(), parsed.clone());
        Ok(parsed)
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
        let parsed = self.parsed(url)?;
        if let Some(why) = refused_literal(&parsed, &self.allow) {
            return Err(Failure::Permanent(why));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| Failure::Permanent(format!("invalid method {method:?}")))?;
        let payload = body.as_str().as_bytes().to_vec();
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
            let signature = crate::signature::standard_sign(secret, &row.id, now, &payload);
            request = request
                .header("webhook-timestamp", now.to_string())
                .header("webhook-signature", signature);
        }
        let response = request.body(payload).send().await.map_err(|e| {
            // The guard's refusal surfaces as a connect error; it will not change.
            match caused_by::<GuardRefusal>(&e) {
                Some(refusal) => Failure::Permanent(refusal.0.clone()),
                None => Failure::transient(format!("HTTP: {}", chain_text(&e))),
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
pub(super) fn classify(
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn urls_are_parsed_once_and_only_http_ones_are_called() {
        let client = WebhookClient::new(&Settings::default()).unwrap();
        let url = "https://hooks.example/deal?id=1";
        assert_eq!(client.parsed(url).unwrap().as_str(), url);
        assert_eq!(client.parsed(url).unwrap().as_str(), url);
        for bad in ["ftp://hooks.example/x", "not a url"] {
            assert!(
                matches!(client.parsed(bad), Err(Failure::Permanent(_))),
                "{bad}"
            );
        }
        // Only the one that will be called is kept.
        assert_eq!(client.urls.lock().unwrap().len(), 1);
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
