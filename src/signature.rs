//! HMAC-SHA256 signatures: the one implementation behind webhooks dealflow
//! signs (Standard Webhooks) and payloads it verifies (every source scheme).
//! Comparisons go through `hmac`'s `verify_slice`, which is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

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
