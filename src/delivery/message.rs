//! Turning an outbox email row into an RFC 5322 message: sender, threading,
//! unsubscribe headers (RFC 8058), the postal footer, and an HTML part with
//! a plain-text alternative for Markdown. Anything that could smuggle a
//! header (a line break in a subject, a malformed address) is refused here,
//! as a permanent failure of that one email.

use super::unsubscribe::UnsubscribeKey;
use crate::config::Workflows;
use crate::state::{Audience, BodyFormat, Delivery, OutboxEntry};
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

/// A message ready to hand over, and the identity it carries.
pub struct Built {
    /// The message.
    pub message: Message,
    /// Its Message-ID, `<id@domain>`.
    pub message_id: String,
}

/// The Message-ID of an outbox row: derived from the row, so a resend after
/// a crash carries the same one and the receiver can deduplicate.
pub fn message_id(row_id: &str, domain: &str) -> String {
    format!("<{row_id}@{domain}>")
}

/// The outbox row id inside one of our Message-IDs.
pub fn row_id_of(message_id: &str) -> Option<&str> {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    inner.split_once('@').map(|(local, _)| local)
}

/// The domain our Message-IDs use: the configured sender's.
pub fn id_domain(workflows: &Workflows) -> String {
    workflows
        .settings
        .email_from
        .as_deref()
        .and_then(|f| f.parse::<Mailbox>().ok())
        .map(|m| m.email.domain().to_owned())
        .unwrap_or_else(|| "dealflow.invalid".to_owned())
}

/// Builds the message of an email row.
pub fn build(
    row: &OutboxEntry,
    workflows: &Workflows,
    key: &UnsubscribeKey,
) -> Result<Built, String> {
    let Delivery::Email {
        to,
        cc,
        from,
        subject,
        body,
        format,
        audience,
        thread,
        ..
    } = &row.delivery
    else {
        return Err("not an email".to_owned());
    };
    refuse_line_breaks("subject", subject)?;
    let domain = id_domain(workflows);
    let sender = sender(from.as_deref(), *audience, workflows)?;
    let id = message_id(&row.id, &domain);
    let mut builder = Message::builder()
        .from(sender.clone())
        .to(mailbox("to", to)?)
        .subject(subject.clone())
        .message_id(Some(id.clone()));
    for c in cc {
        builder = builder.cc(mailbox("cc", c)?);
    }
    if let Some(owner) = from {
        builder = builder.reply_to(mailbox("reply-to", owner)?);
    }
    if let Some(root) = thread {
        let root_id = message_id(root, &domain);
        builder = builder.in_reply_to(root_id.clone()).references(root_id);
    }
    let mut body = body.clone();
    let mut footer = None;
    if *audience == Audience::Prospect {
        let url = key.url(workflows, &row.id);
        body = key.sign_links(workflows, &row.id, &body);
        let mailto = format!(
            "mailto:{}?subject=unsubscribe%20{}",
            sender.email,
            key.token(&row.id)
        );
        builder = builder
            .raw_header(header("List-Unsubscribe", format!("<{url}>, <{mailto}>"))?)
            .raw_header(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            )?);
        footer = Some(Footer {
            postal: workflows.settings.postal_address.clone(),
            url,
        });
    }
    let message = match format {
        BodyFormat::Text => {
            builder.singlepart(SinglePart::plain(with_text_footer(body, footer.as_ref())))
        }
        BodyFormat::Html => {
            builder.singlepart(SinglePart::html(with_html_footer(body, footer.as_ref())))
        }
        BodyFormat::Markdown => builder.multipart(markdown_parts(&body, footer.as_ref())),
    }
    .map_err(|e| format!("cannot build the message: {e}"))?;
    Ok(Built {
        message,
        message_id: id,
    })
}

/// What the recipient of an email row reads: the body with its links
/// signed and the footer added, as `build` hands it over (the plain-text
/// part of a Markdown email, the HTML of an HTML one). `None` for webhooks.
pub fn body_as_sent(
    row: &OutboxEntry,
    workflows: &Workflows,
    key: &UnsubscribeKey,
) -> Option<String> {
    let Delivery::Email {
        body,
        format,
        audience,
        ..
    } = &row.delivery
    else {
        return None;
    };
    let to_prospect = *audience == Audience::Prospect;
    let footer = to_prospect.then(|| Footer {
        postal: workflows.settings.postal_address.clone(),
        url: key.url(workflows, &row.id),
    });
    let body = if to_prospect {
        key.sign_links(workflows, &row.id, body)
    } else {
        body.clone()
    };
    Some(match format {
        BodyFormat::Text => with_text_footer(body, footer.as_ref()),
        BodyFormat::Html => with_html_footer(body, footer.as_ref()),
        BodyFormat::Markdown => with_text_footer(unescape_html(&body), footer.as_ref()),
    })
}

/// The owner (with the team's display name) or `settings.email.from`.
fn sender(
    owner: Option<&str>,
    audience: Audience,
    workflows: &Workflows,
) -> Result<Mailbox, String> {
    if let Some(email) = owner {
        let name = workflows
            .team
            .people
            .get(email)
            .and_then(|p| p.name.clone());
        let address = email
            .parse()
            .map_err(|e| format!("invalid sender address {email:?}: {e}"))?;
        return Ok(Mailbox::new(name, address));
    }
    let from =
        workflows
            .settings
            .email_from
            .as_deref()
            .ok_or(if audience == Audience::Prospect {
                "no sender: the record has no owner and settings.email.from is not set"
            } else {
                "no sender: team notices are sent from settings.email.from, which is not set"
            })?;
    mailbox("from", from)
}

fn mailbox(what: &str, text: &str) -> Result<Mailbox, String> {
    refuse_line_breaks(what, text)?;
    text.parse()
        .map_err(|e| format!("invalid {what} address {text:?}: {e}"))
}

fn refuse_line_breaks(what: &str, text: &str) -> Result<(), String> {
    if text.contains(['\r', '\n']) {
        return Err(format!(
            "the {what} contains a line break, which could inject headers; not sent"
        ));
    }
    Ok(())
}

fn header(name: &str, value: String) -> Result<HeaderValue, String> {
    let name = HeaderName::new_from_ascii(name.to_owned()).map_err(|e| e.to_string())?;
    Ok(HeaderValue::new(name, value))
}

struct Footer {
    postal: Option<String>,
    url: String,
}

fn markdown_parts(body: &str, footer: Option<&Footer>) -> MultiPart {
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(body));
    // The Markdown was rendered with values HTML-escaped (safe in the HTML
    // part); the text part shows them as the reader typed them.
    let text = unescape_html(body);
    MultiPart::alternative()
        .singlepart(SinglePart::plain(with_text_footer(text, footer)))
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(with_html_footer(html, footer)),
        )
}

fn with_text_footer(mut text: String, footer: Option<&Footer>) -> String {
    if let Some(f) = footer {
        text.push_str("\n\n--\n");
        if let Some(postal) = &f.postal {
            text.push_str(postal);
            text.push('\n');
        }
        text.push_str(&format!("Unsubscribe: {}\n", f.url));
    }
    text
}

fn with_html_footer(mut html: String, footer: Option<&Footer>) -> String {
    if let Some(f) = footer {
        let postal = f.postal.as_deref().map(escape_html).unwrap_or_default();
        html.push_str(&format!(
            "<hr><p style=\"font-size:12px;color:#666\">{postal}<br><a href=\"{}\">Unsubscribe</a></p>",
            escape_html(&f.url)
        ));
    }
    html
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Undoes minijinja's HTML escaping.
fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::RecordKey;

    fn workflows() -> Workflows {
        crate::config::load_for_tests(
            "settings: { email: { from: \"Acme <sales@acme.example>\" } }\n",
        )
    }

    /// An email delivery for tests.
    pub fn email_to(to: &str, subject: &str, format: BodyFormat, audience: Audience) -> Delivery {
        Delivery::Email {
            to: to.into(),
            cc: vec![],
            from: None,
            subject: subject.into(),
            body: "Hi &lt;b&gt;".into(),
            format,
            audience,
            thread: None,
            zone: None,
        }
    }

    fn email(to: &str, subject: &str, format: BodyFormat) -> OutboxEntry {
        OutboxEntry::pending(
            "0000000000000001-x".into(),
            RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            email_to(to, subject, format, Audience::Team),
            chrono::DateTime::UNIX_EPOCH,
            "r".into(),
        )
    }

    #[test]
    fn header_injection_is_refused() {
        let w = workflows();
        let key = UnsubscribeKey::from_bytes(&[1; 32]);
        for (to, subject) in [
            ("pat@p.example", "Hi\r\nBcc: all@p.example"),
            ("pat@p.example\r\nBcc: all@p.example", "Hi"),
            ("not an address", "Hi"),
        ] {
            let err = build(&email(to, subject, BodyFormat::Markdown), &w, &key).err();
            assert!(err.is_some(), "{to:?} {subject:?} was accepted");
        }
    }

    #[test]
    fn text_templates_are_plain_and_html_templates_are_html() {
        let w = workflows();
        let key = UnsubscribeKey::from_bytes(&[1; 32]);
        let text = build(&email("pat@p.example", "Hi", BodyFormat::Text), &w, &key).unwrap();
        let raw = String::from_utf8(text.message.formatted()).unwrap();
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
        assert!(
            !raw.contains("List-Unsubscribe"),
            "a team notice has no unsubscribe: {raw}"
        );
        let html = build(&email("pat@p.example", "Hi", BodyFormat::Html), &w, &key).unwrap();
        assert!(
            String::from_utf8(html.message.formatted())
                .unwrap()
                .contains("Content-Type: text/html")
        );
        assert_eq!(text.message_id, "<0000000000000001-x@acme.example>");
        assert_eq!(row_id_of(&text.message_id), Some("0000000000000001-x"));
    }
}
