//! Reading a workflow folder: finds the files, interpolates `${VAR}`, parses
//! YAML into [`WorkflowFile`]s and templates, and turns parser errors into
//! diagnostics that point at the value and say how to fix it.

use super::diagnostic::{Code, Diagnostics, Position, relative_to, suggestion};
use super::environment::{Environment, Secrets, referenced_variables};
use super::interpolation;
use super::model::{Text, WorkflowFile};
use crate::state::BodyFormat;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest workflow or template file read; larger ones are reported.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed workflow file.
#[derive(Debug)]
pub struct SourceFile {
    /// Path relative to the workflow folder.
    pub path: PathBuf,
    /// The file's text.
    pub text: String,
    /// Its sections.
    pub model: WorkflowFile,
}

/// A template file under `templates/`, split into front matter and body.
#[derive(Debug)]
pub struct TemplateSource {
    /// Base name, e.g. `cold-intro` for `templates/cold-intro.md`.
    pub name: String,
    /// Path relative to the workflow folder.
    pub path: PathBuf,
    /// Markdown, HTML or text.
    pub format: BodyFormat,
    /// `subject:` from the front matter.
    pub subject: Option<Text>,
    /// The body text after the front matter.
    pub body: String,
    /// Lines before the body (front matter), to report body lines correctly.
    pub body_line_offset: u64,
}

/// Everything read from a folder, before compilation.
#[derive(Debug, Default)]
pub struct SourceSet {
    /// The folder.
    pub root: PathBuf,
    /// Workflow files that parsed.
    pub files: Vec<SourceFile>,
    /// Template files that parsed.
    pub templates: Vec<TemplateSource>,
    /// Values read from the environment, to mask in messages.
    pub secrets: Secrets,
    /// Content hash of every file read (path and bytes), hex.
    pub version: String,
    /// Files that could not be read or parsed; what they define is unknown.
    pub unreadable: usize,
}

/// Reads every workflow and template file below `root`.
pub fn read_folder(root: &Path, env: &dyn Environment, diags: &mut Diagnostics) -> SourceSet {
    let mut set = SourceSet {
        root: root.to_path_buf(),
        ..SourceSet::default()
    };
    if !root.is_dir() {
        diags.error(
            Position::file(""), Code::Folder,
            "workflow folder not found (or not a folder); pass the folder that holds your *.yaml files",
        );
        return set;
    }
    let variables = env.variables();
    let mut hasher = Sha256::new();
    for path in workflow_paths(root, diags) {
        let rel = relative_to(root, &path);
        let Some(text) = read_text(&path, &rel, diags) else {
            set.unreadable += 1;
            continue;
        };
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        if is_template(root, &path) {
            match parse_template(&rel, &text, &variables, diags) {
                Some(t) => set.templates.push(t),
                None => set.unreadable += 1,
            }
        } else {
            remember_secrets(&text, &variables, &mut set.secrets);
            match parse_yaml::<WorkflowFile>(&rel, &text, &variables, diags) {
                Some(model) => set.files.push(SourceFile {
                    path: rel,
                    text,
                    model,
                }),
                None => set.unreadable += 1,
            }
        }
    }
    set.version = hex_prefix(&hasher.finalize());
    if set.files.is_empty() && set.unreadable == 0 {
        diags.warning(
            Position::file(""), Code::Folder,
            "the folder holds no workflow files (*.yaml), so nothing will run; `dealflow init DIR` writes a starter folder",
        );
    }
    set
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Workflow YAML anywhere below the root, and templates under `templates/`,
/// sorted so loading is deterministic. Hidden folders (`.git`) are skipped.
pub fn workflow_paths(root: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_file() => {
                let p = e.into_path();
                if is_yaml(&p) || is_template(root, &p) {
                    paths.push(p);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let at = e.path().map(|p| relative_to(root, p)).unwrap_or_default();
                let why = if e.loop_ancestor().is_some() {
                    "symbolic link loop; this folder is skipped".to_owned()
                } else {
                    format!(
                        "cannot read: {}",
                        e.io_error()
                            .map_or_else(|| e.to_string(), |io| io.to_string())
                    )
                };
                diags.error(Position::file(at), Code::File, why);
            }
        }
    }
    paths
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn template_format(path: &Path) -> Option<BodyFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("md") => Some(BodyFormat::Markdown),
        Some("html") => Some(BodyFormat::Html),
        Some("txt") => Some(BodyFormat::Text),
        _ => None,
    }
}

fn is_template(root: &Path, path: &Path) -> bool {
    path.parent() == Some(&root.join("templates")) && template_format(path).is_some()
}

/// The file as UTF-8 text, or a diagnostic saying why not.
fn read_text(path: &Path, rel: &Path, diags: &mut Diagnostics) -> Option<String> {
    let too_big = std::fs::metadata(path).map(|m| m.len() > MAX_FILE_BYTES);
    if let Ok(true) = too_big {
        diags.error(
            Position::file(rel),
            Code::File,
            format!(
                "file is larger than {} MiB; split it into several files",
                MAX_FILE_BYTES >> 20
            ),
        );
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.error(
                Position::file(rel),
                Code::File,
                format!("cannot read file: {e}"),
            );
            return None;
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Editors and `git checkout` truncate a file before writing it; a
        // reload that caught that moment must not run an empty rule set.
        diags.error(
            Position::file(rel), Code::File,
            "file is empty; write its content or delete it (empty files are refused so that a save in progress never replaces the running workflows)",
        );
        return None;
    }
    if bytes.contains(&0) {
        diags.error(
            Position::file(rel),
            Code::File,
            "binary file (contains NUL bytes); workflow files must be UTF-8 text",
        );
        return None;
    }
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..offset]);
            let line = text.matches('\n').count() as u64 + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
            diags.error(
                Position::new(rel, line, column),
                Code::File,
                "file is not valid UTF-8 text; save it as UTF-8",
            );
            None
        }
    }
}

fn remember_secrets(text: &str, variables: &HashMap<String, String>, secrets: &mut Secrets) {
    for name in referenced_variables(text) {
        if let Some(value) = variables.get(name) {
            secrets.add(value);
        }
    }
}

/// Parses YAML into `T` with dealflow's limits, reporting the first problem.
pub fn parse_yaml<T: for<'de> Deserialize<'de>>(
    rel: &Path,
    text: &str,
    variables: &HashMap<String, String>,
    diags: &mut Diagnostics,
) -> Option<T> {
    if is_blank_yaml(text) {
        return parse_yaml(rel, "{}", variables, diags);
    }
    let mut options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_aliases: 1_000,
            max_events: 1_000_000,
        },
    }
    .with_properties(variables.clone());
    // Compose mode substitutes in every scalar style; `rewrite` makes its
    // rules ours (see `interpolation`).
    options.property_syntax = serde_saphyr::PropertySyntax::DockerCompose;
    let rewritten = interpolation::rewrite(text);
    match serde_saphyr::from_str_with_options::<T>(&rewritten.text, options) {
        Ok(v) => Some(v),
        Err(err) => {
            let (position, code, message) = explain(rel, text, &rewritten, &err);
            diags.error(position, code, message);
            None
        }
    }
}

/// A file with nothing but comments and blank lines holds no sections.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

/// Turns a parser error into a position and a sentence a user can act on.
fn explain(
    rel: &Path,
    text: &str,
    rewritten: &interpolation::Rewritten,
    err: &serde_saphyr::Error,
) -> (Position, Code, String) {
    use serde_saphyr::Error as E;
    let err = err.without_snippet();
    let location = err.location();
    let (line, column) = location.map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let column = rewritten.original_column(line, column);
    let at = Position::new(rel, line, column);
    let message = match err {
        E::SerdeUnknownField { field, expected, .. } => {
            let key = key_at(text, line, column).unwrap_or(field);
            unknown_key(key, expected.iter().copied())
        }
        E::SerdeUnknownVariant { variant, expected, .. } => {
            let key = key_at(text, line, column).unwrap_or(variant);
            unknown_key(key, expected.iter().copied())
        }
        E::DuplicateMappingKey { key, .. } => duplicate_key(text, key.as_deref(), line, column),
        E::SerdeMissingField { field, .. } => missing_key(text, field, line, column),
        E::UnresolvedProperty { name, .. } | E::PropertyRequiredButUnset { name, .. } => format!(
            "environment variable {name} is not set; set it, or give a default with ${{{name}:-default}}"
        ),
        _ if source_at(text, line, column).starts_with("{{") => {
            "this value starts with \"{{\", so YAML read it as a mapping; quote the whole value, e.g. subject: \"{{ lead.name }}\"".to_owned()
        }
        // The scanner's own words ("did not find expected key") rarely say
        // that the cause is nearly always a line indented differently from
        // its siblings.
        // `{ url: ${X} }`: YAML's own grammar ends a plain value at `{`.
        E::ExternalMessage { .. } if unquoted_variable_in_flow(text, line) => {
            "in { ... } style, a value holding ${VAR} must be quoted, e.g. { url: \"${CRM_URL}/hooks\" }".to_owned()
        }
        E::ExternalMessage { .. } if !mentions_brackets_or_quotes(err) => format!(
            "{}; YAML reads structure from indentation: check that this line and the one before it line up with their siblings, indented with spaces (not tabs)",
            plain_message(err)
        ),
        _ => plain_message(err),
    };
    let code = match err {
        E::UnresolvedProperty { .. } | E::PropertyRequiredButUnset { .. } => Code::Env,
        _ => Code::Yaml,
    };
    (at, code, message)
}

fn unknown_key<'a>(key: &str, expected: impl Iterator<Item = &'a str> + Clone) -> String {
    let hint = suggestion(key, expected.clone());
    if hint.is_empty() {
        let list: Vec<&str> = expected.collect();
        format!(
            "unknown key \"{key}\"; expected one of: {}",
            list.join(", ")
        )
    } else {
        format!("unknown key \"{key}\"{hint}")
    }
}

/// A missing key, and the nearby line that writes it at another
/// indentation, where YAML read it as part of something else.
fn missing_key(text: &str, key: &str, line: u64, column: u64) -> String {
    let siblings = column.saturating_sub(1) as usize;
    let written = text
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1) as usize)
        .take(30)
        .find(|(_, l)| {
            let body = l.trim_start_matches([' ', '-']);
            body.starts_with(&format!("{key}:")) && l.len() - body.len() != siblings
        });
    match written {
        Some((index, l)) => format!(
            "missing key \"{key}\"; line {} writes it indented by {} spaces, but the keys beside it are indented by {siblings}",
            index + 1,
            l.len() - l.trim_start_matches([' ', '-']).len()
        ),
        None => format!("missing key \"{key}\""),
    }
}

/// Names the earlier line that holds the same key at the same indentation.
fn duplicate_key(text: &str, key: Option<&str>, line: u64, column: u64) -> String {
    let Some(key) = key else {
        return "duplicate key in this mapping".to_owned();
    };
    let col = column.saturating_sub(1) as usize;
    let earlier = text
        .lines()
        .take(line.saturating_sub(1) as usize)
        .enumerate()
        .filter(|(_, l)| {
            let rest = l.get(col..).unwrap_or("");
            let indent_ok = l.chars().take(col).all(|c| c == ' ' || c == '-');
            indent_ok
                && (rest.starts_with(&format!("{key}:"))
                    || rest.starts_with(&format!("\"{key}\":")))
        })
        .map(|(i, _)| i + 1)
        .last();
    match earlier {
        Some(first) => format!("duplicate key \"{key}\"; it is already set on line {first}"),
        None => format!("duplicate key \"{key}\" in this mapping"),
    }
}

/// The mapping key written at `line:column`. The parser hides a key's name
/// ("an interpolated field") once it has substituted a `${VAR}` nearby, in
/// case the key came from the environment; keys never do here, and the
/// user needs the name to fix it.
fn key_at(text: &str, line: u64, column: u64) -> Option<&str> {
    let rest = source_at(text, line, column);
    let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))?;
    let after = rest[end..].trim_start_matches(['"', '\'']);
    (end > 0 && after.starts_with(':')).then(|| &rest[..end])
}

/// Whether `line` writes `${` outside quotes inside a `{ ... }` mapping.
fn unquoted_variable_in_flow(text: &str, line: u64) -> bool {
    let Some(l) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return false;
    };
    let (mut depth, mut quote) = (0u32, None);
    for (i, c) in l.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '$') if l[i..].starts_with("${") && depth > 0 => return true,
            (None, '{') => depth += 1,
            (None, '}') => depth = depth.saturating_sub(1),
            (None, '#') => return false,
            _ => {}
        }
    }
    false
}

/// Whether a scanner error is about an unclosed bracket or quote, where an
/// indentation hint would mislead.
fn mentions_brackets_or_quotes(err: &serde_saphyr::Error) -> bool {
    let message = err.to_string();
    ["bracket", "brace", "quote", "quoted"]
        .iter()
        .any(|w| message.contains(w))
}

/// The source text from `line:column` to the end of that line.
fn source_at(text: &str, line: u64, column: u64) -> &str {
    let Some(l) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return "";
    };
    let start = l
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map_or(l.len(), |(i, _)| i);
    &l[start..]
}

/// The parser's own message without the location it appends.
fn plain_message(err: &serde_saphyr::Error) -> String {
    let rendered = err.to_string();
    let first = rendered.lines().next().unwrap_or("invalid YAML").trim();
    let trimmed = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let trimmed = trimmed.trim_end_matches(':');
    match trimmed {
        "invalid boolean" => "expected true or false".to_owned(),
        "expected mapping start" => "expected a mapping (key: value pairs) here".to_owned(),
        "expected sequence start" => "expected a list here".to_owned(),
        other => other.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    subject: Option<Text>,
    #[allow(dead_code)]
    description: Option<String>,
}

fn parse_template(
    rel: &Path,
    text: &str,
    variables: &HashMap<String, String>,
    diags: &mut Diagnostics,
) -> Option<TemplateSource> {
    let format = template_format(rel)?;
    let name = rel.file_stem()?.to_string_lossy().into_owned();
    let (front, body, body_line_offset) = split_front_matter(text);
    let subject = match front {
        Some(yaml) => {
            // Parse the front matter in place so positions match the file.
            let padded = format!("\n{yaml}");
            parse_yaml::<FrontMatter>(rel, &padded, variables, diags)?.subject
        }
        None => None,
    };
    Some(TemplateSource {
        name,
        path: rel.to_path_buf(),
        format,
        subject,
        body: body.to_owned(),
        body_line_offset,
    })
}

/// Splits `---\nYAML\n---\nBODY` into the YAML, the body and the number of
/// lines before the body.
fn split_front_matter(text: &str) -> (Option<&str>, &str, u64) {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return (None, text, 0);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            let lines = 2 + yaml.matches('\n').count() as u64;
            return (Some(yaml), body, lines);
        }
        offset += line.len();
    }
    (None, text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_split_with_line_offset() {
        let (front, body, lines) = split_front_matter("---\nsubject: hi\n---\nHello\n");
        assert_eq!(front, Some("subject: hi\n"));
        assert_eq!(body, "Hello\n");
        assert_eq!(lines, 3);
        assert_eq!(split_front_matter("Hello").0, None);
    }

    #[test]
    fn duplicate_key_names_the_first_line() {
        let text = "rules:\n  - name: a\n    on: x\n    on: y\n";
        assert_eq!(
            duplicate_key(text, Some("on"), 4, 5),
            "duplicate key \"on\"; it is already set on line 3"
        );
    }
}
