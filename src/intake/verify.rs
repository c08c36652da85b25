//! Verifying a source's delivery before anything of it is stored (SPEC
//! §3.10): the signature or token schemes other tools use. Every signature
//! is checked by [`crate::signature`], in constant time.

use crate::config::model::SignatureEncoding;
use crate::config::workflows::Verification;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

/// A request's headers: lower-case names, values as text (repeated
/// headers joined with `, `; bytes that are not UTF-8 replaced).
pub type Headers = BTreeMap<String, String>;

/// What was posted to a source.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The raw body, exactly as received (signatures are over these bytes).
    pub body: &'a [u8],
    /// The headers.
    pub headers: &'a Headers,
    /// `?token=` of the URL, if given.
    pub query_token: Option<&'a str>,
}

/// Why a delivery is refused (answered `401`, nothing stored). The words
/// never include the secret or the signature expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The header that should carry the signature is absent.
    #[error("the {0} header is missing")]
    Missing(String),
    /// The header is there but not in the scheme's shape.
    #[error("the {header} header is not {shape}")]
    Malformed {
        /// Which header.
        header: String,
        /// What it should look like.
        shape: &'static str,
    },
    /// The signed timestamp is too far from now (a replayed delivery).
    #[error(
        "the signed timestamp is {age_seconds}s away from now, more than the tolerance of {tolerance_seconds}s"
    )]
    Stale {
        /// How far, in seconds.
        age_seconds: i64,
        /// The source's tolerance.
        tolerance_seconds: u64,
    },
    /// The signature or token does not match.
    #[error(
        "the {0} does not match (check the secret set for this source in the sender's settings)"
    )]
    Mismatch(&'static str),
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing(_) => "signature_missing",
            Refusal::Malformed { .. } => "signature_malformed",
            Refusal::Stale { .. } => "stale",
            Refusal::Mismatch(_) => "signature_mismatch",
        }
    }
}

/// A delivery that passed verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// The sender's own id of this delivery, when its scheme signs one
    /// (`webhook-id`): a source without `id:` deduplicates on it.
    pub delivery_id: Option<String>,
}

/// Checks a delivery against a source's scheme at time `now`.
pub fn verify(
    scheme: &Verification,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Result<Verified, Refusal> {
    match scheme {
        Verification::None => Ok(Verified::default()),
        Verification::Hmac {
            header,
            prefix,
            encoding,
            secret,
        } => {
            let value = header_value(delivery, header)?;
            let written =
                value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| Refusal::Malformed {
                        header: header.clone(),
                        shape: "the signature after the configured prefix",
                    })?;
            let signature = decode(written, *encoding).ok_or_else(|| Refusal::Malformed {
                header: header.clone(),
                shape: match encoding {
                    SignatureEncoding::Hex => "a hexadecimal signature",
                    SignatureEncoding::Base64 => "a base64 signature",
                },
            })?;
            verdict(
                crate::signature::verify(secret.0.as_bytes(), &[delivery.body], &signature),
                "signature",
            )
        }
        Verification::Timestamped {
            header,
            secret,
            tolerance,
        } => timestamped(delivery, header, &secret.0, *tolerance, now),
        Verification::Standard { secret, tolerance } => {
            standard(delivery, &secret.0, *tolerance, now)
        }
        Verification::Token { header, secret } => {
            let given = match header {
                Some(h) => {
                    let value = header_value(delivery, h)?;
                    let value = value.trim();
                    value
                        .strip_prefix("Bearer ")
                        .or_else(|| value.strip_prefix("bearer "))
                        .unwrap_or(value)
                }
                None => delivery
                    .query_token
                    .ok_or_else(|| Refusal::Missing("?token= query".to_owned()))?,
            };
            // Comparing MACs of both keeps the comparison constant-time
            // whatever the lengths.
            let expected = crate::signature::sign(b"dealflow source token", &[secret.0.as_bytes()]);
            let same =
                crate::signature::verify(b"dealflow source token", &[given.as_bytes()], &expected);
            verdict(same, "token")
        }
    }
}

fn verdict(same: bool, what: &'static str) -> Result<Verified, Refusal> {
    if same {
        Ok(Verified::default())
    } else {
        Err(Refusal::Mismatch(what))
    }
}

fn header_value<'a>(delivery: &'a Delivery, name: &str) -> Result<&'a str, Refusal> {
    delivery
        .headers
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| Refusal::Missing(name.to_owned()))
}

fn decode(text: &str, encoding: SignatureEncoding) -> Option<Vec<u8>> {
    match encoding {
        SignatureEncoding::Hex => hex::decode(text).ok(),
        SignatureEncoding::Base64 => STANDARD.decode(text).ok(),
    }
}

/// `t=TIMESTAMP,v1=HEX[,v1=HEX...]` over `TIMESTAMP.BODY` (Stripe,
/// Calendly); any `v1` may match (senders rotating a secret send two).
fn timestamped(
    delivery: &Delivery,
    header: &str,
    secret: &str,
    tolerance: Duration,
    now: DateTime<Utc>,
) -> Result<Verified, Refusal> {
    let value = header_value(delivery, header)?;
    let malformed = || Refusal::Malformed {
        header: header.to_owned(),
        shape: "t=TIMESTAMP,v1=SIGNATURE",
    };
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.trim()),
            Some(("v1", s)) => signatures.push(s.trim()),
            _ => {}
        }
    }
    let (Some(timestamp), false) = (timestamp, signatures.is_empty()) else {
        return Err(malformed());
    };
    let seconds: i64 = timestamp.parse().map_err(|_| malformed())?;
    fresh(seconds, tolerance, now)?;
    let signed = [timestamp.as_bytes(), b".", delivery.body];
    let any = signatures
        .iter()
        .filter_map(|s| hex::decode(s).ok())
        .any(|s| crate::signature::verify(secret.as_bytes(), &signed, &s));
    verdict(any, "signature")
}

/// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
fn standard(
    delivery: &Delivery,
    secret: &str,
    tolerance: Duration,
    now: DateTime<Utc>,
) -> Result<Verified, Refusal> {
    let id = header_value(delivery, "webhook-id")?;
    let timestamp = header_value(delivery, "webhook-timestamp")?;
    let signature = header_value(delivery, "webhook-signature")?;
    let seconds: i64 = timestamp.trim().parse().map_err(|_| Refusal::Malformed {
        header: "webhook-timestamp".to_owned(),
        shape: "a Unix time in seconds",
    })?;
    fresh(seconds, tolerance, now)?;
    let same = crate::signature::standard_verify(secret, id, seconds, delivery.body, signature);
    verdict(same, "signature").map(|_| Verified {
        delivery_id: Some(id.to_owned()),
    })
}

/// Refuses a timestamp further than `tolerance` from now, either way.
fn fresh(seconds: i64, tolerance: Duration, now: DateTime<Utc>) -> Result<(), Refusal> {
    let age = now.timestamp().saturating_sub(seconds);
    let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if age.checked_abs().is_none_or(|a| a > limit) {
        return Err(Refusal::Stale {
            age_seconds: age,
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workflows::SigningSecret;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(
        scheme: &Verification,
        body: &[u8],
        pairs: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<Verified, Refusal> {
        let headers = headers(pairs);
        let delivery = Delivery {
            body,
            headers: &headers,
            query_token: token,
        };
        verify(scheme, &delivery, now())
    }

    fn secret() -> SigningSecret {
        SigningSecret("s3cret".to_owned())
    }

    #[test]
    fn hmac_in_hex_and_base64_with_a_prefix() {
        let body = br#"{"a":1}"#;
        let mac = crate::signature::sign(b"s3cret", &[body]);
        let hex_scheme = Verification::Hmac {
            header: "x-sig".into(),
            prefix: String::new(),
            encoding: SignatureEncoding::Hex,
            secret: secret(),
        };
        assert!(check(&hex_scheme, body, &[("x-sig", &hex::encode(&mac))], None).is_ok());
        assert!(
            check(
                &hex_scheme,
                body,
                &[("x-sig", &hex::encode_upper(&mac))],
                None
            )
            .is_ok()
        );
        assert_eq!(
            check(&hex_scheme, b"{}", &[("x-sig", &hex::encode(&mac))], None),
            Err(Refusal::Mismatch("signature"))
        );
        assert!(matches!(
            check(&hex_scheme, body, &[("x-sig", "zz")], None),
            Err(Refusal::Malformed { .. })
        ));
        assert_eq!(
            check(&hex_scheme, body, &[], None),
            Err(Refusal::Missing("x-sig".into()))
        );
        let b64 = Verification::Hmac {
            header: "typeform-signature".into(),
            prefix: "sha256=".into(),
            encoding: SignatureEncoding::Base64,
            secret: secret(),
        };
        let written = format!("sha256={}", STANDARD.encode(&mac));
        assert!(check(&b64, body, &[("typeform-signature", &written)], None).is_ok());
        assert!(matches!(
            check(
                &b64,
                body,
                &[("typeform-signature", &STANDARD.encode(&mac))],
                None
            ),
            Err(Refusal::Malformed { .. })
        ));
    }

    #[test]
    fn timestamped_checks_the_time_and_any_v1() {
        let body = br#"{"event":"invitee.created"}"#;
        let scheme = Verification::Timestamped {
            header: "calendly-webhook-signature".into(),
            secret: secret(),
            tolerance: Duration::from_secs(300),
        };
        let sign_at = |t: i64| {
            hex::encode(crate::signature::sign(
                b"s3cret",
                &[t.to_string().as_bytes(), b".", body],
            ))
        };
        let t = now().timestamp();
        let good = format!("t={t},v1={}", sign_at(t));
        assert!(
            check(
                &scheme,
                body,
                &[("calendly-webhook-signature", &good)],
                None
            )
            .is_ok()
        );
        let rotated = format!("t={t},v1=00ff,v1={}", sign_at(t));
        assert!(
            check(
                &scheme,
                body,
                &[("calendly-webhook-signature", &rotated)],
                None
            )
            .is_ok()
        );
        let old = t - 301;
        let stale = format!("t={old},v1={}", sign_at(old));
        assert!(matches!(
            check(
                &scheme,
                body,
                &[("calendly-webhook-signature", &stale)],
                None
            ),
            Err(Refusal::Stale {
                age_seconds: 301,
                ..
            })
        ));
        let moved = format!("t={},v1={}", t - 1, sign_at(t));
        assert_eq!(
            check(
                &scheme,
                body,
                &[("calendly-webhook-signature", &moved)],
                None
            ),
            Err(Refusal::Mismatch("signature"))
        );
        for bad in ["v1=abc", "t=1", "t=x,v1=00", ""] {
            assert!(
                matches!(
                    check(&scheme, body, &[("calendly-webhook-signature", bad)], None),
                    Err(Refusal::Malformed { .. })
                ),
                "{bad}"
            );
        }
        let far = format!("t={},v1=00", i64::MIN);
        assert!(matches!(
            check(&scheme, body, &[("calendly-webhook-signature", &far)], None),
            Err(Refusal::Stale { .. })
        ));
    }

    #[test]
    fn standard_webhooks_give_their_delivery_id() {
        let scheme = Verification::Standard {
            secret: SigningSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            tolerance: Duration::from_secs(300),
        };
        let t = now().timestamp();
        let body = b"{}";
        let signature = crate::signature::standard_sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_1",
            t,
            body,
        );
        let ts = t.to_string();
        let verified = check(
            &scheme,
            body,
            &[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &signature),
            ],
            None,
        )
        .unwrap();
        assert_eq!(verified.delivery_id.as_deref(), Some("msg_1"));
        assert_eq!(
            check(
                &scheme,
                body,
                &[
                    ("webhook-id", "msg_2"),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", &signature)
                ],
                None
            ),
            Err(Refusal::Mismatch("signature"))
        );
        assert_eq!(
            check(&scheme, body, &[("webhook-id", "msg_1")], None),
            Err(Refusal::Missing("webhook-timestamp".into()))
        );
    }

    #[test]
    fn tokens_in_a_header_or_the_query() {
        let in_query = Verification::Token {
            header: None,
            secret: secret(),
        };
        assert!(check(&in_query, b"", &[], Some("s3cret")).is_ok());
        assert_eq!(
            check(&in_query, b"", &[], Some("s3cre")),
            Err(Refusal::Mismatch("token"))
        );
        assert!(matches!(
            check(&in_query, b"", &[], None),
            Err(Refusal::Missing(_))
        ));
        let in_header = Verification::Token {
            header: Some("authorization".into()),
            secret: secret(),
        };
        assert!(check(&in_header, b"", &[("authorization", "Bearer s3cret")], None).is_ok());
        assert!(check(&in_header, b"", &[("authorization", "s3cret")], None).is_ok());
        assert_eq!(
            check(&in_header, b"", &[("authorization", "Bearer x")], None),
            Err(Refusal::Mismatch("token"))
        );
    }

    fn schemes() -> Vec<Verification> {
        vec![
            Verification::Hmac {
                header: "x-sig".into(),
                prefix: "sha256=".into(),
                encoding: SignatureEncoding::Hex,
                secret: secret(),
            },
            Verification::Hmac {
                header: "x-sig".into(),
                prefix: String::new(),
                encoding: SignatureEncoding::Base64,
                secret: secret(),
            },
            Verification::Timestamped {
                header: "x-sig".into(),
                secret: secret(),
                tolerance: Duration::from_secs(300),
            },
            Verification::Standard {
                secret: secret(),
                tolerance: Duration::from_secs(300),
            },
            Verification::Token {
                header: Some("x-sig".into()),
                secret: secret(),
            },
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        /// Odd header bytes, signatures of every length and encoding, and
        /// any body: refused or accepted, never a panic, and never
        /// accepted without the secret.
        #[test]
        fn any_delivery_is_refused_without_the_secret(
            scheme in 0usize..5,
            body in prop::collection::vec(any::<u8>(), 0..64),
            sig in "(sha256=)?[ -~]{0,80}|t=[0-9]{1,12},v1=[0-9a-f]{0,64}",
            id in "[ -~]{0,12}",
            ts in "-?[0-9]{0,20}",
        ) {
            let schemes = schemes();
            let pairs = [("x-sig", sig.as_str()), ("webhook-id", id.as_str()), ("webhook-timestamp", ts.as_str()), ("webhook-signature", sig.as_str())];
            let answer = check(&schemes[scheme], &body, &pairs, Some(&sig));
            prop_assert!(answer.is_err(), "accepted {sig:?}");
        }
    }
}
