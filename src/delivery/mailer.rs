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
                    if e.is_permanent() {
                        Failure::Refused(reason)
                    } else {
                        Failure::transient(reason)
                    }
                }),
        }
    }
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
