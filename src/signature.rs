//! HMAC-SHA256 signatures: the one implementation behind webhooks dealflow
//! signs (Standard Webhooks) and payloads it verifies (every source scheme);
//! and Twilio's HMAC-SHA1 request signature. Comparisons go through
//! `hmac`'s `verify_slice`, which is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<sha1::Sha1>;

/// What Twilio signs: the URL it called, then each form parameter's name
/// and value, sorted by name then value, a repeated pair once (as
/// Twilio's own validators do).
fn twilio_mac(token: &str, url: &str, params: &[(String, String)]) -> Option<HmacSha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    Some(mac)
}

/// `X-Twilio-Signature` of a request to `url` with form `params`.
pub fn twilio_sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    twilio_mac(token, url, params)
        .map_or_else(String::new, |m| STANDARD.encode(m.finalize().into_bytes()))
}

/// Whether `signature` (base64, as in `X-Twilio-Signature`) is Twilio's
/// signature of the request, compared in constant time.
pub fn twilio_verify(token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(signature) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    twilio_mac(token, url, params).is_some_and(|m| m.verify_slice(&signature).is_ok())
}

/// The MAC of the concatenated `parts` under `key`. HMAC takes keys of any
/// length, so `None` never happens; it keeps a panic out of request paths.
fn mac(key: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac)
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn sign(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    mac(key, parts).map_or_else(Vec::new, |m| m.finalize().into_bytes().to_vec())
}

/// Whether `signature` is the HMAC-SHA256 of `parts` under `key`, compared
/// in constant time.
pub fn verify(key: &[u8], parts: &[&[u8]], signature: &[u8]) -> bool {
    mac(key, parts).is_some_and(|m| m.verify_slice(signature).is_ok())
}

/// Standard Webhooks' key: a `whsec_` secret is base64, any other is used
/// as its UTF-8 bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,BASE64(HMAC-SHA256(key, "id.timestamp.body"))` (Standard Webhooks).
pub fn standard_sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let prefix = format!("{id}.{timestamp}.");
    let signed = sign(&standard_key(secret), &[prefix.as_bytes(), body]);
    format!("v1,{}", STANDARD.encode(signed))
}

/// Whether any `v1,BASE64` entry of a `webhook-signature` header signs
/// this message (several are sent while a secret is rotated).
pub fn standard_verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let key = standard_key(secret);
    let prefix = format!("{id}.{timestamp}.");
    header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|signature| verify(&key, &[prefix.as_bytes(), body], &signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn twilio_signatures_match_twilios_published_vectors() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("From", "+14158675309"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]);
        let documented = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert_eq!(twilio_sign("12345", url, &params), documented);
        assert!(twilio_verify("12345", url, &params, documented));
        assert!(!twilio_verify("12346", url, &params, documented));
        assert!(!twilio_verify(
            "12345",
            &format!("{url}&x=1"),
            &params,
            documented
        ));
        assert!(!twilio_verify("12345", url, &params, "not base64 王"));
        // Repeated names: sorted by value within the name.
        let repeated = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert!(twilio_verify(
            "12345",
            url,
            &repeated,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        ));
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let signature = standard_sign(secret, id, 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let rotated = format!("v1,bm90IGl0 {signature}");
        assert!(standard_verify(secret, id, 1614265330, body, &rotated));
        assert!(!standard_verify(secret, id, 1614265331, body, &signature));
        assert!(!standard_verify(secret, id, 1614265330, b"{}", &signature));
    }

    #[test]
    fn a_signature_of_another_length_is_refused_not_a_panic() {
        let good = sign(b"k", &[b"body"]);
        assert!(verify(b"k", &[b"bo", b"dy"], &good));
        assert!(!verify(b"k", &[b"body"], &good[..5]));
        assert!(!verify(b"k", &[b"body"], &[]));
    }
}
