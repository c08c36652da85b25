//! Handing email over: to an SMTP server through a lettre connection pool
//! (rustls; `smtp://`, `smtps://`, `?tls=required`), or into a folder of
//! `.eml` files (`maildir:PATH`, the default), so a fresh install works
//! without a mail server.

use super::message::Built;
use super::retry::Failure;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connections kept open to the SMTP server.
const POOL_SIZE: u32 = 16;

/// Time limit of one SMTP conversation.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where email goes.
pub enum Mailer {
    /// One `ROW-ID.eml` file per message in a folder.
    Maildir(PathBuf),
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Mailer {
    /// The mailer of a transport URL; `None` is `maildir:` under the data directory.
    pub fn from_transport(transport: Option<&str>, data_dir: &Path) -> Result<Mailer, String> {
        let Some(url) = transport else {
            return Ok(Mailer::Maildir(data_dir.join("outbox")));
        };
        if let Some(path) = url.strip_prefix("maildir:") {
            return Ok(Mailer::Maildir(PathBuf::from(path)));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("mail transport: {e}"))?
            .pool_config(PoolConfig::new().max_size(POOL_SIZE))
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer::Smtp(transport))
    }

    /// Hands one message over.
    pub async fn send(&self, built: &Built, row_id: &str) -> Result<(), Failure> {
        match self {
            Mailer::Maildir(dir) => write_eml(dir, row_id, &built.message.formatted()).await,
            Mailer::Smtp(transport) => transport
                .send(built.message.clone())
                .await
                .map(|_| ())
                .map_err(|e| {
                    let reason = format!("SMTP: {e}");
                    if !e.is_permanent() {
                        Failure::transient(reason)
                    } else if rejects_recipient(&e.to_string()) {
                        Failure::Refused(reason)
                    } else {
                        Failure::Sender(reason)
                    }
                }),
        }
    }
}

/// Whether a permanent SMTP reply rejects the recipient rather than the
/// sender or the session. lettre does not say which command a reply
/// answered, so the reply's enhanced status code (RFC 3463, sent by every
/// major server) decides: `5.1.1`-`5.1.6` and `5.1.10` are about the
/// destination address, `5.2.1` and `5.2.2` about its mailbox. A reply
/// without one (`535` bad login, `554` on the session) is not a bounce: one
/// bad password must not suppress every prospect emailed while it lasts.
pub fn rejects_recipient(reply: &str) -> bool {
    let Some((subject, detail)) = enhanced_status(reply) else {
        return false;
    };
    matches!((subject, detail), (1, 1..=6 | 10) | (2, 1 | 2))
}

/// The subject and detail of the first `5.X.Y` enhanced status in a reply.
fn enhanced_status(reply: &str) -> Option<(u16, u16)> {
    reply
        .split(|c: char| c.is_whitespace() || c == '-' || c == ':' || c == '(' || c == ')')
        .find_map(|token| {
            let mut parts = token.split('.');
            let class = parts.next()?;
            let subject = parts.next()?.parse().ok()?;
            let detail = parts.next()?.parse().ok()?;
            (class == "5" && parts.next().is_none()).then_some((subject, detail))
        })
}

/// Writes the message as `ROW-ID.eml`, atomically (a reader never sees half
/// a message) and durably; a resend after a crash overwrites the same file.
async fn write_eml(dir: &Path, row_id: &str, bytes: &[u8]) -> Result<(), Failure> {
    let dir = dir.to_path_buf();
    // Ids carry user-chosen step names: keep the file name a plain name.
    let safe: String = row_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{safe}.eml");
    let bytes = bytes.to_vec();
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(&name))
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::transient(format!("writing the .eml file: {e}"))),
        Err(e) => Err(Failure::transient(format!("writing the .eml file: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::rejects_recipient;

    #[test]
    fn only_replies_about_the_recipient_are_bounces() {
        let bounces = [
            "permanent error (550): 5.1.1 <pat@p.example>: Recipient address rejected: User unknown",
            "permanent error (550): 5.1.10 RESOLVER.ADR.RecipientNotFound",
            "permanent error (550): 5.2.1 The email account that you tried to reach is disabled",
        ];
        let not_bounces = [
            "permanent error (535): 5.7.8 Username and Password not accepted",
            "permanent error (550): 5.7.1 Sender address rejected: not owned by user",
            "permanent error (553): 5.1.8 Sender address domain does not exist",
            "permanent error (552): 5.3.4 Message size exceeds fixed limit",
            "permanent error (554): Transaction failed",
            "permanent error (550): Mailbox unavailable",
        ];
        assert!(bounces.iter().all(|r| rejects_recipient(r)));
        assert!(not_bounces.iter().all(|r| !rejects_recipient(r)));
    }
}
