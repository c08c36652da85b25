//! One address, one suppression (SPEC §3.8): `Pat <Pat@X.example>`,
//! ` pat@x.example` and `<pat@x.example>` are the same person, so every
//! suppression and contact limit is keyed on the address as lettre will
//! send to it, lower-cased.
//!
//! The local part is lower-cased too. RFC 5321 lets a server treat it as
//! case-sensitive, but no mainstream provider does, and wrongly treating two
//! spellings as one person only withholds an email; treating them as two
//! would email someone who unsubscribed. `+tags` are kept: `pat+news@` may
//! well be a separate inbox to its owner.

use lettre::message::Mailbox;

/// The address an email to `raw` goes to, lower-cased; `raw` itself,
/// trimmed and lower-cased, when it is not an address lettre can parse.
pub fn normalized(raw: &str) -> String {
    let trimmed = raw.trim();
    let bare = trimmed
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(trimmed);
    match bare.parse::<Mailbox>() {
        Ok(mailbox) => mailbox.email.to_string().to_lowercase(),
        Err(_) => trimmed.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn every_spelling_of_one_address_is_one_key() {
        for raw in [
            "pat@x.example",
            "Pat <pat@x.example>",
            " pat@x.example",
            "<pat@x.example>",
            "\"Pat Lee\" <PAT@X.Example>",
            "pat@X.EXAMPLE\n",
        ] {
            assert_eq!(normalized(raw), "pat@x.example", "{raw:?}");
        }
        assert_eq!(normalized("pat+news@x.example"), "pat+news@x.example");
        assert_eq!(normalized("not an address"), "not an address");
    }
}
