//! A throwaway Dovecot IMAP server on a loopback port, with a maildir per
//! user, started in the foreground for one test (Debian's dovecot-imapd;
//! `.ci/run` installs it when missing).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// Declared here rather than in `common`, so the mailbox bench can include
// this file alone; the browser tests reach it through here.
#[path = "debian.rs"]
pub mod debian;

/// The Dovecot binary (Debian's dovecot-imapd).
fn dovecot_binary() -> &'static str {
    static FOUND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        debian::program(
            &["/usr/sbin/dovecot", "/usr/bin/dovecot"],
            &["dovecot-imapd"],
        )
    })
}

/// A running Dovecot, stopped when dropped.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The implicit-TLS (imaps) port, when started with TLS.
    pub tls_port: Option<u16>,
    child: Option<Child>,
    uid: u32,
}

/// The uid and gid mail processes run as: `nobody` when the test runs as
/// root (Dovecot refuses uid 0 for mail), else the test's own.
fn mail_uid() -> u32 {
    let me = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    if me == 0 { 65534 } else { me }
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` accounts, each with
    /// an INBOX and a `Processed` folder.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, true)
    }

    /// Like [`Dovecot::start`], with TLS: STARTTLS on `port`, implicit TLS
    /// on `tls_port`, a certificate for 127.0.0.1 signed by a CA made for
    /// the test ([`Dovecot::ca_file`]).
    pub fn start_tls(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_options(users, true, true)
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Like [`Dovecot::start`]; `idle: false` takes IDLE out of the
    /// capabilities, as some servers have it.
    pub fn start_with(users: &[(&str, &str)], idle: bool) -> Dovecot {
        Dovecot::start_options(users, idle, false)
    }

    fn start_options(users: &[(&str, &str)], idle: bool, tls: bool) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tls_port = tls.then(free_port);
        let uid = mail_uid();
        for sub in ["run", "state", "mail", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        let d = dir.path().display();
        let capability = if idle {
            ""
        } else {
            "imap_capability = IMAP4rev1 LITERAL+ SASL-IR UIDPLUS MOVE\n"
        };
        let (ssl, imaps) = match tls_port {
            Some(tls_port) => {
                make_certificates(dir.path());
                (
                    format!("ssl = yes\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key\n"),
                    format!("address = 127.0.0.1\n    port = {tls_port}"),
                )
            }
            None => ("ssl = no\n".to_owned(), "port = 0".to_owned()),
        };
        let config = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={uid} home={d}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  chroot =
}}
{capability}"#
        );
        std::fs::write(dir.path().join("dovecot.conf"), config).unwrap();
        for (user, _) in users {
            for folder in ["", ".Processed"] {
                for sub in ["cur", "new", "tmp"] {
                    let path = dir.path().join("mail").join(user).join(folder).join(sub);
                    std::fs::create_dir_all(path).unwrap();
                }
            }
        }
        chown_tree(&dir.path().join("mail"), uid);
        chown_tree(&dir.path().join("home"), uid);
        let mut dovecot = Dovecot {
            dir,
            port,
            tls_port,
            child: None,
            uid,
        };
        dovecot.run();
        dovecot
    }

    /// Starts (again) the server process on the same port and folders.
    pub fn run(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("run/master.pid"));
        let child = Command::new(dovecot_binary())
            .args(["-F", "-c"])
            .arg(self.dir.path().join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start dovecot ({e}): install Debian's dovecot-imapd, as .ci/run does"
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut greeting = [0u8; 4];
                if s.read_exact(&mut greeting).is_ok() && &greeting == b"* OK" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "dovecot did not answer on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// Stops the server process (the folders stay).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master then stops its login and mail processes,
            // which would keep the port open after a SIGKILL.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        // Its login and mail processes go with the master; wait for the port.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What Dovecot logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Delivers a raw message to `user`'s INBOX, as a mail server's local
    /// delivery would: written to `tmp/`, then renamed into `new/`.
    pub fn deliver(&self, user: &str, raw: &str) {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}.{n}.dealflow-test", std::process::id());
        let maildir = self.dir.path().join("mail").join(user);
        let tmp = maildir.join("tmp").join(&name);
        let mut file = std::fs::File::create(&tmp).unwrap();
        file.write_all(raw.replace('\n', "\r\n").as_bytes())
            .unwrap();
        drop(file);
        chown_tree(&tmp, self.uid);
        std::fs::rename(&tmp, maildir.join("new").join(&name)).unwrap();
    }

    /// `imap://USER:PASSWORD@127.0.0.1:PORT/INBOX`, percent-encoded.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "imap://{}:{password}@127.0.0.1:{}/INBOX",
            user.replace('@', "%40"),
            self.port
        )
    }

    /// Where `user`'s folders are.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// How many messages `user`'s `folder` holds (`""` is the INBOX).
    pub fn count(&self, user: &str, folder: &str) -> usize {
        ["cur", "new"]
            .iter()
            .map(|sub| {
                std::fs::read_dir(self.maildir(user).join(folder).join(sub))
                    .map_or(0, |d| d.count())
            })
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=dealflow test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn chown_tree(path: &Path, uid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(uid));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}
