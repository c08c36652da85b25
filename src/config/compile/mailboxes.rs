//! `settings.mailboxes`: the IMAP mailboxes replies are read from (SPEC §3.11).

use super::context::Cx;
use crate::config::diagnostic::Code;
use crate::config::model::{MailboxSpec, MatchMode, Text};
use crate::config::workflows::{AfterHandled, MailSecurity, Mailbox, SigningSecret};
use std::collections::BTreeSet;
use std::time::Duration;

/// How often a mailbox is looked at without IDLE, and as a safety net.
const DEFAULT_POLL: Duration = Duration::from_secs(60);

/// Compiles every mailbox; names must differ.
pub fn compile(specs: &[MailboxSpec], cx: &mut Cx) -> Vec<Mailbox> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for spec in specs {
        if !names.insert(spec.name.get().clone()) {
            cx.error(
                &spec.name,
                Code::Duplicate,
                format!("mailbox \"{}\" is defined twice", spec.name.get()),
            );
            continue;
        }
        out.extend(mailbox(spec, cx));
    }
    out
}

fn mailbox(spec: &MailboxSpec, cx: &mut Cx) -> Option<Mailbox> {
    let server = cx.parsed(&spec.url, parse_url);
    let after = match &spec.after {
        None => Some(AfterHandled::Leave),
        Some(a) => cx.parsed(a, parse_after),
    };
    let poll = match &spec.poll {
        None => Some(DEFAULT_POLL),
        Some(p) => cx.positive_duration(p, "poll"),
    };
    let server = server?;
    if server.security == MailSecurity::Plain && !is_loopback(&server.host) {
        warn_plain(&spec.url, &server.host, cx);
    }
    Some(Mailbox {
        name: spec.name.get().clone(),
        matching: spec
            .matching
            .as_ref()
            .map_or(MatchMode::Thread, |m| *m.get()),
        after: after?,
        poll: poll?,
        ..server
    })
}

fn warn_plain(url: &Text, host: &str, cx: &mut Cx) {
    cx.warning(
        url, Code::Insecure,
        format!("imap:// to {host} sends the password unencrypted; use imaps:// or add ?tls=required (plain imap:// is for loopback)"),
    );
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `imaps://USER:PASSWORD@HOST[:PORT][/FOLDER][?tls=required]`, with the
/// user and password percent-encoded as URLs require (`sales%40acme.example`).
fn parse_url(text: &str) -> Result<Mailbox, String> {
    let shape = "write imaps://USER:PASSWORD@HOST/FOLDER (or imap://...?tls=required for STARTTLS)";
    let url = url::Url::parse(text).map_err(|e| format!("invalid mailbox url ({e}); {shape}"))?;
    let mut starttls = false;
    for (key, value) in url.query_pairs() {
        if key != "tls" || value != "required" {
            return Err(format!(
                "unknown mailbox url option \"{key}={value}\"; the only one is tls=required"
            ));
        }
        starttls = true;
    }
    let (security, default_port) = match (url.scheme(), starttls) {
        ("imaps", false) => (MailSecurity::Tls, 993),
        ("imaps", true) => return Err("imaps:// is TLS already; drop ?tls=required".to_owned()),
        ("imap", true) => (MailSecurity::StartTls, 143),
        ("imap", false) => (MailSecurity::Plain, 143),
        (other, _) => {
            return Err(format!(
                "mailbox url scheme \"{other}\" is not imap or imaps; {shape}"
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(format!("the mailbox url has no host; {shape}"))?;
    let decode = |part: &str| {
        percent_decode(part).ok_or_else(|| {
            "the mailbox url's user or password is not valid percent-encoded UTF-8".to_owned()
        })
    };
    let user = decode(url.username())?;
    if user.is_empty() {
        return Err(format!("the mailbox url has no user; {shape}"));
    }
    let password = decode(url.password().unwrap_or_default())?;
    let folder = decode(url.path().trim_start_matches('/'))?;
    Ok(Mailbox {
        name: String::new(),
        host: host.to_owned(),
        port: url.port().unwrap_or(default_port),
        security,
        user,
        password: SigningSecret(password),
        folder: if folder.is_empty() {
            "INBOX".to_owned()
        } else {
            folder
        },
        matching: MatchMode::Thread,
        after: AfterHandled::Leave,
        poll: DEFAULT_POLL,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes: Vec<u8> =
        form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

fn parse_after(text: &str) -> Result<AfterHandled, String> {
    match text {
        "leave" => Ok(AfterHandled::Leave),
        "mark_seen" => Ok(AfterHandled::MarkSeen),
        other => match other.strip_prefix("move:").map(str::trim) {
            Some(folder) if !folder.is_empty() => Ok(AfterHandled::Move(folder.to_owned())),
            _ => Err(format!(
                "after is leave, mark_seen or move:FOLDER, not \"{other}\""
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_say_how_to_connect() {
        let m = parse_url("imaps://sales%40acme.example:p%40ss+w@imap.acme.example/INBOX").unwrap();
        assert_eq!(
            (
                m.user.as_str(),
                m.password.0.as_str(),
                m.host.as_str(),
                m.port,
                m.security
            ),
            (
                "sales@acme.example",
                "p@ss+w",
                "imap.acme.example",
                993,
                MailSecurity::Tls
            )
        );
        let m = parse_url("imap://u:p@mail.example:1143/Replies?tls=required").unwrap();
        assert_eq!(
            (m.port, m.security, m.folder.as_str()),
            (1143, MailSecurity::StartTls, "Replies")
        );
        let m = parse_url("imap://u:p@127.0.0.1").unwrap();
        assert_eq!(
            (m.port, m.security, m.folder.as_str()),
            (143, MailSecurity::Plain, "INBOX")
        );
        assert!(
            m.shown().starts_with("imap://u@127.0.0.1:143/INBOX") && !m.shown().contains(":p@")
        );
        for (bad, says) in [
            ("pop3://u:p@h", "not imap or imaps"),
            ("imaps://h/INBOX", "no user"),
            (
                "imap://u:p@h?tls=maybe",
                "unknown mailbox url option \"tls=maybe\"",
            ),
            ("imap://u:p@h?x=1", "unknown mailbox url option"),
            ("imaps://u:p@h?tls=required", "TLS already"),
            ("not a url", "invalid mailbox url"),
        ] {
            let err = parse_url(bad).err().unwrap_or_default();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn after_is_leave_mark_seen_or_a_move() {
        assert_eq!(
            parse_after("move: Processed"),
            Ok(AfterHandled::Move("Processed".into()))
        );
        assert_eq!(parse_after("mark_seen"), Ok(AfterHandled::MarkSeen));
        assert!(parse_after("move:").is_err() && parse_after("delete").is_err());
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && !is_loopback("imap.example"));
    }
}
