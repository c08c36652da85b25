//! `${VAR}` in every string value (SPEC §3): plain, single- or double-quoted,
//! block or flow style. The YAML parser (serde-saphyr) substitutes in every
//! style only in its Docker Compose mode, whose rules differ from ours in two
//! ways; this pass rewrites the text so that mode does what SPEC §3 says:
//!
//! - `${NAME}` with no default must be an error when unset (Compose makes it
//!   empty): it becomes `${NAME?}`, Compose's "required" form.
//! - a bare `$name` is literal text to us (Compose substitutes it): it becomes
//!   `$$name`, Compose's escape. `$${` stays as written, a literal `${`.
//!
//! Each rewrite adds one character; [`Rewritten::original_column`] maps a
//! parser position back to the column the user sees in the file.

/// The text handed to the parser, and where it grew.
#[derive(Debug)]
pub struct Rewritten {
    /// The rewritten YAML.
    pub text: String,
    /// (line, column in the rewritten line) of every inserted character, 1-based.
    inserts: Vec<(u64, u64)>,
}

impl Rewritten {
    /// The column in the user's file of `column` on `line` of the rewritten text.
    pub fn original_column(&self, line: u64, column: u64) -> u64 {
        let before = self
            .inserts
            .iter()
            .filter(|(l, c)| *l == line && *c < column)
            .count() as u64;
        column.saturating_sub(before).max(1)
    }
}

/// Rewrites `text` for the parser's Compose-mode interpolation.
pub fn rewrite(text: &str) -> Rewritten {
    let mut out = String::with_capacity(text.len());
    let mut inserts = Vec::new();
    // The file's line and column, and the characters inserted on this line.
    let (mut line, mut column, mut grown) = (1u64, 1u64, 0u64);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let taken = if c == '$' {
            let (written, added) = rewrite_dollar(rest);
            out.push_str(&written);
            if let Some(at) = added {
                inserts.push((line, column + grown + at));
                grown += 1;
            }
            written.len() - usize::from(added.is_some())
        } else {
            out.push(c);
            c.len_utf8()
        };
        for c in rest[..taken].chars() {
            if c == '\n' {
                (line, column, grown) = (line + 1, 1, 0);
            } else {
                column += 1;
            }
        }
        rest = &rest[taken..];
    }
    Rewritten { text: out, inserts }
}

/// What a `$` at the start of `rest` is written as, and the offset (in
/// characters from the `$`) of the character inserted, if any.
fn rewrite_dollar(rest: &str) -> (String, Option<u64>) {
    if rest.starts_with("$${") {
        return ("$${".to_owned(), None);
    }
    if let Some(name) = required_reference(rest) {
        // `${NAME}` → `${NAME?}`: the `?` goes before the closing brace.
        return (format!("${{{name}?}}"), Some(2 + name.len() as u64));
    }
    if rest.starts_with("${") {
        return ("${".to_owned(), None);
    }
    let next = rest[1..].chars().next();
    let substituted_by_compose =
        next.is_some_and(|n| n == '$' || n == '_' || n.is_ascii_alphabetic());
    if substituted_by_compose && !is_mapping_key(rest) {
        return ("$$".to_owned(), Some(0));
    }
    ("$".to_owned(), None)
}

/// `NAME` of a `${NAME}` at the start of `rest` (no default, no operator).
fn required_reference(rest: &str) -> Option<&str> {
    let inner = rest.strip_prefix("${")?;
    let end = inner.find('}')?;
    let name = &inner[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    valid.then_some(name)
}

/// Whether the `$name` at the start of `rest` is a mapping key (`$type: x`,
/// `"$schema": ...`): the parser never substitutes keys, so they are left
/// as written.
fn is_mapping_key(rest: &str) -> bool {
    let after =
        rest[1..].trim_start_matches(|c: char| c == '_' || c == '$' || c.is_ascii_alphanumeric());
    let after = after.strip_prefix(['"', '\'']).unwrap_or(after);
    after
        .strip_prefix(':')
        .is_some_and(|tail| tail.is_empty() || tail.starts_with([' ', '\t', '\n', '\r']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_required_and_bare_dollars_literal() {
        let cases = [
            ("a: ${X}", "a: ${X?}"),
            ("a: \"${X}/hooks\"", "a: \"${X?}/hooks\""),
            ("a: ${X:-d}", "a: ${X:-d}"),
            ("a: ${X:-${Y}}", "a: ${X:-${Y?}}"),
            ("a: $${X}", "a: $${X}"),
            ("a: save $5", "a: save $5"),
            ("a: $name", "a: $$name"),
            ("a: $$x", "a: $$$$x"),
            ("\"$type\": x", "\"$type\": x"),
        ];
        for (input, expected) in cases {
            assert_eq!(rewrite(input).text, expected, "{input}");
        }
    }

    #[test]
    fn columns_map_back_to_the_file() {
        let r = rewrite("a: ${X} ${Y} z\nb: ${Z}");
        // `z` is at column 14 in the file, 16 after two inserts.
        assert_eq!(r.text.lines().next().unwrap().find('z').unwrap() + 1, 16);
        assert_eq!(r.original_column(1, 16), 14);
        assert_eq!(r.original_column(1, 4), 4);
        assert_eq!(r.original_column(2, 4), 4);
    }
}

#[cfg(test)]
mod loading {
    use crate::config::workflows::Action;
    use std::collections::HashMap;

    /// SPEC §3: every style of string value, with the same environment.
    const FLOWS: &str = r#"
settings:
  email: { from: "${COMPANY} <sales@acme.example>" }
rules:
  - name: every-style
    on: form.submitted
    do:
      - webhook: { url: "${CRM_URL}/hooks", secret: "${WEBHOOK_SECRET}", headers: { X-Single: '${TOKEN}' } }
      - webhook:
          url: ${CRM_URL}/block
          headers:
            X-Plain: ${TOKEN}
            X-Literal: "$${NOT_A_VAR} costs $5 for $name"
            X-Default: ${UNSET_VAR:-fallback}
            X-Folded: >-
              ${COMPANY}
"#;

    #[test]
    fn variables_are_replaced_in_every_style_and_escapes_stay_literal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flows.yaml"), FLOWS).unwrap();
        let env: HashMap<String, String> = [
            ("COMPANY", "Acme Corp"),
            ("CRM_URL", "https://crm.acme.example"),
            ("WEBHOOK_SECRET", "whsec_c2VjcmV0LXNpZ25pbmcta2V5"),
            ("TOKEN", "tok-123456789"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (w, d) = crate::config::load(dir.path(), &env);
        let w = w.unwrap_or_else(|| panic!("{d:#?}"));
        assert_eq!(
            w.settings.email_from.as_deref(),
            Some("Acme Corp <sales@acme.example>")
        );
        let hooks: Vec<_> = w.rules[0]
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Webhook(h) => Some(h),
                _ => None,
            })
            .collect();
        let header = |i: usize, name: &str| {
            hooks[i]
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.source.clone())
                .unwrap_or_default()
        };
        assert_eq!(hooks[0].url.source, "https://crm.acme.example/hooks");
        assert_eq!(
            hooks[0].secret.as_deref(),
            Some("whsec_c2VjcmV0LXNpZ25pbmcta2V5")
        );
        assert_eq!(header(0, "X-Single"), "tok-123456789");
        assert_eq!(header(1, "X-Plain"), "tok-123456789");
        assert_eq!(hooks[1].url.source, "https://crm.acme.example/block");
        assert_eq!(header(1, "X-Literal"), "${NOT_A_VAR} costs $5 for $name");
        assert_eq!(header(1, "X-Default"), "fallback");
        assert_eq!(header(1, "X-Folded"), "Acme Corp");
    }

    #[test]
    fn an_unset_variable_in_quotes_is_an_error_at_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "rules:\n  - name: r\n    on: x\n    do: [ { webhook: { url: \"https://h.example/${MISSING}\" } } ]\n";
        std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap();
        let (w, d) = crate::config::load(dir.path(), &HashMap::new());
        assert!(w.is_none());
        let shown = d[0].to_string();
        assert!(
            shown.starts_with("flows.yaml:4:") && shown.contains("MISSING is not set"),
            "{shown}"
        );
    }
}
