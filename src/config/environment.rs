//! Where `${VAR}` values come from, behind a trait so tests pass a map
//! instead of changing the process environment.

use std::collections::HashMap;

/// A source of `${VAR}` values.
pub trait Environment {
    /// Every variable that `${NAME}` may read.
    fn variables(&self) -> HashMap<String, String>;
}

/// The process environment, for the daemon and the command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn variables(&self) -> HashMap<String, String> {
        // vars_os: a non-UTF-8 variable elsewhere in the environment must not
        // stop dealflow from starting; such variables are simply not usable.
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl Environment for HashMap<String, String> {
    fn variables(&self) -> HashMap<String, String> {
        self.clone()
    }
}

/// Values read from the environment; they are secrets and are masked in every
/// message dealflow writes (diagnostics, logs, status, run history).
///
/// How a value is found in text depends on its length, so that masking
/// hides secrets and not words: a value of 1-3 characters (`${RETRIES:-3}`
/// set to `s`, a region `eu`) is no secret and would turn "transport" into
/// "tran***port"; one of 4-7 characters is masked where it stands as a word
/// of its own; a longer one wherever it appears (a token inside a URL).
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    values: Vec<String>,
}

/// Values shorter than this are not treated as secrets.
const SHORTEST_SECRET: usize = 4;

/// Values shorter than this are masked only as whole words.
const MASKED_INSIDE_WORDS: usize = 8;

impl Secrets {
    /// Remembers `value` as a secret.
    pub fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.chars().count() >= SHORTEST_SECRET && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_owned());
            // Longest first, so a secret containing another is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.values.iter().fold(text.to_owned(), |acc, secret| {
            if secret.chars().count() >= MASKED_INSIDE_WORDS {
                acc.replace(secret, "***")
            } else {
                replace_words(&acc, secret)
            }
        })
    }

    /// Masks every string inside a JSON value (an outbox row, a run) in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => *s = self.redact(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }

    /// Whether no value is remembered (nothing to mask).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// `text` with each occurrence of `word` that no letter or digit touches
/// replaced by `***`.
fn replace_words(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let alone =
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..at]);
        out.push_str(if alone { "***" } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Names of every `${NAME...}` reference in `text`, including nested ones;
/// `$${` is a literal, not a reference.
pub fn referenced_variables(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let escaped = start > 0 && rest.as_bytes()[start - 1] == b'$';
        let after = &rest[start + 2..];
        if escaped {
            rest = after;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 {
            names.push(&after[..len]);
        }
        rest = &after[len..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_references() {
        assert_eq!(
            referenced_variables("${A:-${B_2}} and ${C}"),
            ["A", "B_2", "C"]
        );
    }

    #[test]
    fn short_values_do_not_mangle_words() {
        let mut s = Secrets::default();
        s.add("s");
        s.add("w");
        s.add("port");
        s.add("xoxb-1234567890");
        assert_eq!(
            s.redact("transport webhook port=port: https://h/xoxb-1234567890/x"),
            "transport webhook ***=***: https://h/***/x"
        );
    }

    #[test]
    fn json_values_are_masked_throughout() {
        let mut s = Secrets::default();
        s.add("T0K3N-abcdef-123");
        let mut row = serde_json::json!({
            "url": "https://hooks.slack.com/services/T0K3N-abcdef-123",
            "headers": [ { "name": "Authorization", "value": "Bearer T0K3N-abcdef-123" } ],
            "attempts": 2
        });
        s.redact_json(&mut row);
        assert!(!row.to_string().contains("T0K3N"), "{row}");
        assert_eq!(row["url"], "https://hooks.slack.com/services/***");
    }

    #[test]
    fn redacts_longest_first() {
        let mut s = Secrets::default();
        s.add("hunter");
        s.add("hunter2");
        assert_eq!(s.redact("pw=hunter2 x=hunter"), "pw=*** x=***");
    }
}
