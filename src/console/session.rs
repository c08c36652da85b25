//! Who may use the console: a signed session cookie, got by signing in
//! with the API token (SPEC §8), and the CSRF token every form carries.
//!
//! The cookie is `LEVEL.ISSUED.NONCE.MAC`, signed with a key derived from
//! the API token, so changing the token signs everyone out and a restart
//! does not. With no token set (the daemon then listens only on loopback)
//! the key is random per process and a guest session may do everything;
//! the cookie still exists because the CSRF token is bound to it.

use crate::signature;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

/// The session cookie's name.
pub const COOKIE: &str = "dealflow_session";

/// How long a session lasts after signing in.
const LIFETIME_SECS: i64 = 12 * 3600;

/// Signs and checks sessions and CSRF tokens.
pub struct SessionKeys {
    key: Vec<u8>,
    /// Whether signing in is needed (an API token is set).
    pub token_required: bool,
    /// Whether cookies get `Secure` (the public URL is https).
    secure: bool,
}

/// A checked session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Signed in with the token (or open because no token is set).
    pub signed_in: bool,
    nonce: String,
}

impl SessionKeys {
    /// Keys for a daemon whose API token is `token`.
    pub fn new(token: Option<&str>, secure: bool) -> Self {
        let key = match token {
            Some(token) => signature::sign(token.as_bytes(), &[b"dealflow console sessions"]),
            None => {
                let mut random = [0u8; 32];
                // With no token every session may do everything anyway; the
                // key only binds CSRF tokens to their session, so a failed
                // draw (all zeros) is logged, not fatal.
                if getrandom::fill(&mut random).is_err() {
                    tracing::warn!("No randomness for console sessions; CSRF tokens are weaker.");
                }
                random.to_vec()
            }
        };
        SessionKeys {
            key,
            token_required: token.is_some(),
            secure,
        }
    }

    /// A new session cookie's value, and the session it stands for.
    pub fn issue(&self, signed_in: bool, now: DateTime<Utc>) -> (String, Session) {
        let mut nonce = [0u8; 16];
        // A failed draw leaves a nonce other sessions may share: their CSRF
        // tokens would match each other's, never an outsider's (the MAC
        // needs the key), so it is logged rather than refused.
        if getrandom::fill(&mut nonce).is_err() {
            tracing::warn!("No randomness for a console session's nonce.");
        }
        let nonce = hex::encode(nonce);
        let level = if signed_in { "u" } else { "g" };
        let body = format!("{level}.{}.{nonce}", now.timestamp());
        let mac = hex::encode(signature::sign(&self.key, &[body.as_bytes()]));
        let session = Session {
            signed_in: signed_in || !self.token_required,
            nonce,
        };
        (format!("{body}.{mac}"), session)
    }

    /// The session a request's cookie proves, if any.
    pub fn check(&self, headers: &HeaderMap, now: DateTime<Utc>) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        let (body, mac) = value.rsplit_once('.')?;
        let mac = hex::decode(mac).ok()?;
        if !signature::verify(&self.key, &[body.as_bytes()], &mac) {
            return None;
        }
        let mut parts = body.split('.');
        let level = parts.next()?;
        let issued: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_owned();
        let age = now.timestamp() - issued;
        if !(0..LIFETIME_SECS).contains(&age) {
            return None;
        }
        Some(Session {
            signed_in: level == "u" || !self.token_required,
            nonce,
        })
    }

    /// The CSRF token forms of this session carry.
    pub fn csrf(&self, session: &Session) -> String {
        hex::encode(signature::sign(
            &self.key,
            &[b"csrf.", session.nonce.as_bytes()],
        ))
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, session: &Session, given: &str) -> bool {
        hex::decode(given).is_ok_and(|given| {
            signature::verify(&self.key, &[b"csrf.", session.nonce.as_bytes()], &given)
        })
    }

    /// Adds `Set-Cookie` for a session cookie to a response.
    pub fn attach(&self, response: &mut axum::response::Response, value: &str) {
        Self::append(response, &self.set_cookie(value));
    }

    /// Adds `Set-Cookie` ending the session to a response.
    pub fn detach(&self, response: &mut axum::response::Response) {
        Self::append(response, &self.clear_cookie());
    }

    fn append(response: &mut axum::response::Response, set_cookie: &str) {
        if let Ok(value) = axum::http::HeaderValue::from_str(set_cookie) {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, value);
        }
    }

    /// The `Set-Cookie` header value for a session cookie.
    fn set_cookie(&self, value: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{secure}"
        )
    }

    /// The `Set-Cookie` header value that ends a session.
    fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether `next` is a path on this site (so signing in never redirects
/// elsewhere: `//evil.example` and `/\evil` are refused).
pub fn local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        headers
    }

    fn now() -> DateTime<Utc> {
        "2026-12-05T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_session_is_signed_and_expires() {
        let keys = SessionKeys::new(Some("tok"), false);
        let (value, session) = keys.issue(true, now());
        assert_eq!(keys.check(&with_cookie(&value), now()), Some(session));
        let later = now() + chrono::Duration::seconds(LIFETIME_SECS);
        assert_eq!(keys.check(&with_cookie(&value), later), None);
        let guest = keys.issue(false, now()).0;
        let promoted = format!("u{}", &guest[1..]);
        assert_eq!(keys.check(&with_cookie(&promoted), now()), None);
    }

    #[test]
    fn a_new_token_signs_everyone_out() {
        let (value, _) = SessionKeys::new(Some("old"), false).issue(true, now());
        let keys = SessionKeys::new(Some("new"), false);
        assert_eq!(keys.check(&with_cookie(&value), now()), None);
    }

    #[test]
    fn a_guest_is_signed_in_only_without_a_token() {
        let open = SessionKeys::new(None, false);
        let (value, _) = open.issue(false, now());
        assert!(open.check(&with_cookie(&value), now()).unwrap().signed_in);
        let closed = SessionKeys::new(Some("t"), false);
        let (value, _) = closed.issue(false, now());
        assert!(!closed.check(&with_cookie(&value), now()).unwrap().signed_in);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let keys = SessionKeys::new(Some("t"), false);
        let (_, a) = keys.issue(true, now());
        let (_, b) = keys.issue(true, now());
        let token = keys.csrf(&a);
        assert!(keys.csrf_matches(&a, &token));
        assert!(!keys.csrf_matches(&b, &token));
        assert!(!keys.csrf_matches(&a, "zz"));
        assert!(!keys.csrf_matches(&a, ""));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let keys = SessionKeys::new(None, true);
        let set = keys.set_cookie("v");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.ends_with("; Secure"));
        assert!(
            !SessionKeys::new(None, false)
                .set_cookie("v")
                .contains("Secure")
        );
    }

    #[test]
    fn sign_in_redirects_stay_on_the_site() {
        assert!(local_path("/tasks?owner=a"));
        for bad in ["//evil.example", "/\\evil", "https://evil", "", "/a\nb"] {
            assert!(!local_path(bad), "{bad}");
        }
    }
}
