//! Unsubscribe tokens: `base64url(row id) . base64url(HMAC-SHA256(key, row id))`,
//! with a random key kept in the data directory, so links cannot be guessed
//! or forged, and survive restarts.

use crate::config::Workflows;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;

/// The signing key.
#[derive(Clone)]
pub struct UnsubscribeKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKey(..)")
    }
}

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("unsubscribe key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a key.
    #[error(
        "unsubscribe key {0} is not 32 bytes; move it aside to make a new one (old links stop working)"
    )]
    Invalid(String),
    /// No randomness.
    #[error("no random bytes for the unsubscribe key: {0}")]
    Random(String),
}

impl UnsubscribeKey {
    /// A key from bytes (tests).
    pub fn from_bytes(key: &[u8]) -> Self {
        UnsubscribeKey { key: key.to_vec() }
    }

    /// The key's bytes, for backups.
    pub fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// Writes the key into `dir` (a restore), readable by its owner only.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let path = dir.join("unsubscribe.key");
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = dir.join("unsubscribe.key.tmp");
        std::fs::write(&tmp, &self.key).map_err(io)?;
        restrict(&tmp).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Reads `unsubscribe.key` in `dir`, making it (32 random bytes, owner
    /// read-only) when missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join("unsubscribe.key");
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(key) if key.len() == 32 => return Ok(UnsubscribeKey { key }),
            Ok(_) => return Err(KeyError::Invalid(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = UnsubscribeKey { key };
        key.save(dir)?;
        Ok(key)
    }

    fn mac(&self, id: &str) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The token of an outbox row.
    pub fn token(&self, row_id: &str) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(row_id),
            URL_SAFE_NO_PAD.encode(self.mac(row_id))
        )
    }

    /// The row id a token names, when its signature is ours.
    pub fn verify(&self, token: &str) -> Option<String> {
        let (id, signature) = token.split_once('.')?;
        let id = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).ok()?;
        mac.update(id.as_bytes());
        mac.verify_slice(&signature).ok()?;
        Some(id)
    }

    /// The signed link of an outbox row.
    pub fn url(&self, workflows: &Workflows, row_id: &str) -> String {
        format!(
            "{}/u/{}",
            workflows.settings.public_base(),
            self.token(row_id)
        )
    }

    /// Replaces the engine's unsigned link in a body with the signed one,
    /// also where the template HTML-escaped it.
    pub fn sign_links(&self, workflows: &Workflows, row_id: &str, body: &str) -> String {
        let placeholder = crate::engine::unsubscribe_placeholder(workflows, row_id);
        let escaped = minijinja::HtmlEscape(&placeholder).to_string();
        let signed = self.url(workflows, row_id);
        body.replace(&placeholder, &signed)
            .replace(&escaped, &signed)
    }
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// What an unsubscribe from the message `row` (sent to `to`) changes: the
/// address suppressed at once, and `email.unsubscribed` on the record, in
/// one commit. `via` says how (`link`, `mail`).
pub fn unsubscribed(
    row: &crate::state::OutboxEntry,
    to: &str,
    via: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::store::IntakeWrites {
    use crate::state::{BuiltinEvent, NewEvent, Suppression};
    let data =
        serde_json::json!({ "email": to, "outbox_id": row.id, "step": row.step, "via": via });
    let unsubscribed = BuiltinEvent::EmailUnsubscribed;
    let id = Some(format!("{unsubscribed}/{}", row.id));
    let event = NewEvent::raised(unsubscribed, row.record.clone(), data, now, id);
    let mut changes = crate::store::IntakeWrites::default();
    changes
        .suppress([Suppression::new(to, format!("unsubscribed ({via})"), now)])
        .raise([event]);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let key = UnsubscribeKey::from_bytes(&[7; 32]);
        let token = key.token("0000000000000042-intro");
        assert_eq!(
            key.verify(&token).as_deref(),
            Some("0000000000000042-intro")
        );
        let other = UnsubscribeKey::from_bytes(&[8; 32]);
        assert_eq!(other.verify(&token), None);
        let (_, sig) = token.split_once('.').unwrap();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("0000000000000043-intro"));
        assert_eq!(key.verify(&forged), None);
        for junk in ["", ".", "abc", "a.b.c", "%%%.%%%"] {
            assert_eq!(key.verify(junk), None, "{junk}");
        }
    }

    #[test]
    fn links_are_signed_also_where_a_template_escaped_them() {
        let w = crate::config::load_for_tests("settings: { public_url: \"https://f.example\" }\n");
        let key = UnsubscribeKey::from_bytes(&[1; 32]);
        let raw = crate::engine::unsubscribe_placeholder(&w, "r1");
        let escaped = minijinja::HtmlEscape(&raw).to_string();
        let body = format!("[a]({raw}) [b]({escaped})");
        let signed = key.sign_links(&w, "r1", &body);
        let url = key.url(&w, "r1");
        assert_eq!(signed, format!("[a]({url}) [b]({url})"));
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = UnsubscribeKey::load_or_create(dir.path()).unwrap();
        let b = UnsubscribeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.token("x"), b.token("x"));
        std::fs::write(dir.path().join("unsubscribe.key"), b"short").unwrap();
        assert!(matches!(
            UnsubscribeKey::load_or_create(dir.path()),
            Err(KeyError::Invalid(_))
        ));
    }
}
