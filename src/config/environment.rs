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
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Remembers `value` as a secret.
    pub fn add(&mut self, value: &str) {
        if !value.is_empty() && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_owned());
            // Longest first, so a secret containing another is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.values
            .iter()
            .fold(text.to_owned(), |acc, secret| acc.replace(secret, "***"))
    }
}

/// Names of every `${NAME...}` reference in `text`, including nested ones.
pub fn referenced_variables(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
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
    fn redacts_longest_first() {
        let mut s = Secrets::default();
        s.add("hunter");
        s.add("hunter2");
        assert_eq!(s.redact("pw=hunter2 x=hunter"), "pw=*** x=***");
    }
}
