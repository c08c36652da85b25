//! The IMAP conversation, over `async-imap`: connect (TLS, STARTTLS or
//! plain), log in, select the folder, list and fetch new messages, wait with
//! IDLE, and flag or move what was handled. Nothing here decides what a
//! message means.

use crate::config::workflows::{MailSecurity, Mailbox};
use async_imap::types::Fetch;
use futures_util::TryStreamExt;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Bytes of a message fetched at most: headers, the text and a bounce's
/// report fit; a 50 MB attachment is never read whole.
pub const FETCH_BYTES: u32 = 256 * 1024;

/// How long connecting, logging in or one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A byte stream IMAP runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// What went wrong talking to the server, in words without the password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ImapError(pub String);

impl ImapError {
    fn from_imap(what: &str, e: async_imap::error::Error) -> Self {
        ImapError(format!("{what}: {e}"))
    }
}

/// One message as fetched: its UID and its first [`FETCH_BYTES`].
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its UID in the folder.
    pub uid: u32,
    /// The raw message, cut at [`FETCH_BYTES`].
    pub raw: Vec<u8>,
}

/// A logged-in session with the folder selected.
pub struct Connection {
    session: Session,
    /// The folder's UIDVALIDITY.
    pub uid_validity: u32,
    /// Whether the server offers IDLE.
    pub idle: bool,
}

async fn timed<T>(
    what: &str,
    future: impl Future<Output = Result<T, ImapError>>,
) -> Result<T, ImapError> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| {
            ImapError(format!(
                "{what}: no answer within {}s",
                COMMAND_TIMEOUT.as_secs()
            ))
        })?
}

impl Connection {
    /// Connects, logs in and selects the mailbox's folder.
    pub async fn open(mailbox: &Mailbox) -> Result<Connection, ImapError> {
        let stream = timed("connecting", connect(mailbox)).await?;
        let mut client = async_imap::Client::new(stream);
        // After STARTTLS there is no second greeting to read.
        if mailbox.security != MailSecurity::StartTls {
            timed("reading the greeting", greeting(&mut client)).await?;
        }
        let mut session = timed("logging in", async {
            client
                .login(&mailbox.user, &mailbox.password.0)
                .await
                .map_err(|(e, _)| ImapError::from_imap("logging in", e))
        })
        .await?;
        let capabilities = timed("asking capabilities", async {
            session
                .capabilities()
                .await
                .map_err(|e| ImapError::from_imap("CAPABILITY", e))
        })
        .await?;
        let idle = capabilities.has_str("IDLE");
        let folder = timed("selecting the folder", async {
            session
                .select(&mailbox.folder)
                .await
                .map_err(|e| ImapError::from_imap(&format!("selecting {}", mailbox.folder), e))
        })
        .await?;
        let uid_validity = folder.uid_validity.ok_or_else(|| {
            ImapError(format!(
                "the server gave no UIDVALIDITY for {}",
                mailbox.folder
            ))
        })?;
        Ok(Connection {
            session,
            uid_validity,
            idle,
        })
    }

    /// UIDs above `after`, in order.
    pub async fn uids_after(&mut self, after: u32) -> Result<Vec<u32>, ImapError> {
        let session = &mut self.session;
        let found = timed("searching", async {
            session
                .uid_search(format!("UID {}:*", after.saturating_add(1)))
                .await
                .map_err(|e| ImapError::from_imap("UID SEARCH", e))
        })
        .await?;
        // `N:*` always includes the last message, even below N.
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > after).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// The first [`FETCH_BYTES`] of each message, without flagging it seen.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ImapError> {
        let set = uid_set(uids);
        let session = &mut self.session;
        let fetches: Vec<Fetch> = timed("fetching", async {
            session
                .uid_fetch(&set, format!("(UID BODY.PEEK[]<0.{FETCH_BYTES}>)"))
                .await
                .map_err(|e| ImapError::from_imap("UID FETCH", e))?
                .try_collect()
                .await
                .map_err(|e| ImapError::from_imap("UID FETCH", e))
        })
        .await?;
        Ok(fetches
            .iter()
            .filter_map(|f| {
                Some(Fetched {
                    uid: f.uid?,
                    raw: f.body().unwrap_or_default().to_vec(),
                })
            })
            .collect())
    }

    /// Flags messages `\Seen`.
    pub async fn mark_seen(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        let set = uid_set(uids);
        let session = &mut self.session;
        timed("flagging", async {
            let updates = session
                .uid_store(&set, "+FLAGS.SILENT (\\Seen)")
                .await
                .map_err(|e| ImapError::from_imap("UID STORE", e))?;
            updates
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| ImapError::from_imap("UID STORE", e))?;
            Ok(())
        })
        .await
    }

    /// Moves messages to `folder`.
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        let set = uid_set(uids);
        let session = &mut self.session;
        timed("moving", async {
            session
                .uid_mv(&set, folder)
                .await
                .map_err(|e| ImapError::from_imap(&format!("moving to {folder}"), e))
        })
        .await
    }

    /// Waits until the server says something changed (IDLE), or `poll`
    /// passes, or `stop` completes; answers the connection to go on with.
    pub async fn wait(
        self,
        poll: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<Connection, ImapError> {
        if !self.idle {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = stop => {}
            }
            return Ok(self);
        }
        let Connection {
            session,
            uid_validity,
            idle,
        } = self;
        let mut handle = session.idle();
        timed("starting IDLE", async {
            handle
                .init()
                .await
                .map_err(|e| ImapError::from_imap("IDLE", e))
        })
        .await?;
        {
            let (waiting, interrupt) = handle.wait_with_timeout(poll);
            tokio::select! {
                result = waiting => {
                    result.map_err(|e| ImapError::from_imap("IDLE", e))?;
                }
                () = stop => drop(interrupt),
            }
        }
        let session = timed("ending IDLE", async {
            handle
                .done()
                .await
                .map_err(|e| ImapError::from_imap("IDLE DONE", e))
        })
        .await?;
        Ok(Connection {
            session,
            uid_validity,
            idle,
        })
    }

    /// Says goodbye; errors do not matter any more.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.session.logout()).await;
    }
}

/// `1,2,5` for a UID command.
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn connect(mailbox: &Mailbox) -> Result<Box<dyn Io>, ImapError> {
    let address = format!("{}:{}", mailbox.host, mailbox.port);
    let tcp = TcpStream::connect(&address)
        .await
        .map_err(|e| ImapError(format!("connecting to {address}: {e}")))?;
    match mailbox.security {
        MailSecurity::Plain => Ok(Box::new(tcp)),
        MailSecurity::Tls => Ok(Box::new(tls(&mailbox.host, tcp).await?)),
        MailSecurity::StartTls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| ImapError::from_imap("STARTTLS", e))?;
            Ok(Box::new(tls(&mailbox.host, client.into_inner()).await?))
        }
    }
}

async fn greeting<T: Io>(client: &mut async_imap::Client<T>) -> Result<(), ImapError> {
    client
        .read_response()
        .await
        .map_err(|e| ImapError(format!("reading the greeting: {e}")))?
        .map(|_| ())
        .ok_or_else(|| ImapError("the server closed the connection at once".to_owned()))
}

async fn tls(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let config = tls_config().map_err(|e| ImapError(format!("TLS setup: {e}")))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| ImapError(format!("{host} is not a TLS server name: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ImapError(format!("TLS with {host}: {e}")))
}

type TlsConfig = Result<Arc<tokio_rustls::rustls::ClientConfig>, tokio_rustls::rustls::Error>;

/// Certificates are checked against the Mozilla roots and the system's
/// store (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), so a company's
/// own mail server with an internal CA works. Built once.
fn tls_config() -> TlsConfig {
    static CONFIG: std::sync::OnceLock<TlsConfig> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = tokio_rustls::rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let system = rustls_native_certs::load_native_certs();
            for error in &system.errors {
                tracing::debug!(%error, "A system certificate could not be read.");
            }
            let (added, ignored) = roots.add_parsable_certificates(system.certs);
            tracing::debug!(
                added,
                ignored,
                "System certificates added to the TLS roots."
            );
            let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}
