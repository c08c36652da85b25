//! First pass: every name the folder defines, with where it was defined.
//! Names defined twice are reported here, naming both places.

use super::context::Cx;
use crate::config::diagnostic::Code;
use crate::config::diagnostic::{Position, suggestion};
use crate::config::loader::SourceSet;
use crate::config::model::{Located, Text};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// The names defined in a folder.
#[derive(Debug, Default)]
pub struct Symbols {
    /// Record kinds named by any `for:`.
    pub kinds: BTreeSet<String>,
    /// Template base names.
    pub templates: BTreeMap<String, Position>,
    /// Templates whose front matter gives a subject.
    pub templates_with_subject: BTreeSet<String>,
    /// Sequence name → its kind.
    pub sequences: BTreeMap<String, Option<String>>,
    /// Team names.
    pub teams: BTreeSet<String>,
    /// People by email.
    pub people: BTreeSet<String>,
    /// Record kind → (pipeline name, stage names).
    pub pipelines: BTreeMap<String, (String, Vec<String>)>,
    /// Calendar names.
    pub calendars: BTreeSet<String>,
    /// Scoring model name → its kind.
    pub models: BTreeMap<String, String>,
    /// Whether some file could not be read, so a name missing here may be
    /// defined there: reference errors would only repeat that file's error.
    pub incomplete: bool,
    /// Whether `settings.email.from` is given: team notices are sent from it.
    pub email_from: bool,
    /// Whether `settings.sms` is given: `sms:` needs a provider.
    pub sms: bool,
    /// `settings.webhooks.allow_hosts`, to warn of webhooks the guard refuses.
    pub webhook_allow_hosts: Vec<String>,
    /// Templates and sequences some action uses (for unused warnings).
    used: RefCell<BTreeSet<(&'static str, String)>>,
    /// Where each sequence was defined (for unused warnings).
    sequence_positions: BTreeMap<String, Position>,
}

/// Remembers first definitions and reports later ones.
struct Definitions {
    seen: BTreeMap<(&'static str, String), Position>,
}

impl Definitions {
    /// Whether this is the first definition; reports a duplicate otherwise.
    fn first(&mut self, cx: &mut Cx, what: &'static str, name: &Text) -> bool {
        let at = cx.at(name);
        self.first_at(cx, what, name.get(), at)
    }

    fn first_at(&mut self, cx: &mut Cx, what: &'static str, name: &str, at: Position) -> bool {
        match self.seen.get(&(what, name.to_owned())) {
            Some(first) => {
                cx.error_at(
                    at,
                    Code::Duplicate,
                    format!("{what} \"{name}\" is defined twice; first at {first}"),
                );
                false
            }
            None => {
                self.seen.insert((what, name.to_owned()), at);
                true
            }
        }
    }
}

/// Collects every defined name in `set`.
pub fn collect(set: &SourceSet, cx: &mut Cx) -> Symbols {
    let mut s = Symbols {
        incomplete: set.unreadable > 0,
        ..Symbols::default()
    };
    let mut defs = Definitions {
        seen: BTreeMap::new(),
    };
    for t in &set.templates {
        if defs.first_at(cx, "template", &t.name, Position::file(&t.path)) {
            s.templates.insert(t.name.clone(), Position::file(&t.path));
            if t.subject.is_some() {
                s.templates_with_subject.insert(t.name.clone());
            }
        }
    }
    let mut settings_at: Option<Position> = None;
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        let m = &file.model;
        if let Some(settings) = &m.settings {
            match &settings_at {
                Some(first) => cx.error(
                    settings,
                    Code::Duplicate,
                    format!("settings are given in more than one file; first at {first}"),
                ),
                None => settings_at = Some(cx.at(settings)),
            }
            let settings = settings.get();
            s.email_from |= settings.email.as_ref().is_some_and(|e| e.from.is_some());
            s.sms |= settings.sms.is_some();
            s.webhook_allow_hosts.extend(
                settings
                    .webhooks
                    .iter()
                    .flat_map(|w| &w.allow_hosts)
                    .map(|h| h.get().to_lowercase()),
            );
        }
        for name in m.calendars.keys() {
            if defs.first(cx, "calendar", name) {
                s.calendars.insert(name.get().clone());
            }
        }
        if let Some(team) = &m.team {
            for p in &team.people {
                if defs.first(cx, "person", &p.email) {
                    s.people.insert(p.email.get().clone());
                }
            }
            for name in team.teams.keys() {
                if defs.first(cx, "team", name) {
                    s.teams.insert(name.get().clone());
                }
            }
        }
        for p in &m.pipelines {
            s.kinds.insert(p.kind.get().clone());
            if !defs.first(cx, "pipeline", &p.name) {
                continue;
            }
            if let Some((other, _)) = s.pipelines.get(p.kind.get()) {
                cx.error(
                    &p.kind, Code::Kind,
                    format!(
                        "kind \"{}\" already has pipeline \"{other}\"; a record kind moves through one pipeline",
                        p.kind.get()
                    ),
                );
                continue;
            }
            let stages = p.stages.iter().map(|st| st.name.get().clone()).collect();
            s.pipelines
                .insert(p.kind.get().clone(), (p.name.get().clone(), stages));
        }
        for r in &m.rules {
            defs.first(cx, "rule", &r.name);
            s.kinds.extend(r.kind.as_ref().map(|k| k.get().clone()));
            s.kinds
                .extend(r.for_each.as_ref().map(|f| f.kind.get().clone()));
        }
        for q in &m.sequences {
            s.kinds.extend(q.kind.as_ref().map(|k| k.get().clone()));
            if defs.first(cx, "sequence", &q.name) {
                s.sequences.insert(
                    q.name.get().clone(),
                    q.kind.as_ref().map(|k| k.get().clone()),
                );
                s.sequence_positions
                    .insert(q.name.get().clone(), cx.at(&q.name));
            }
        }
        for model in &m.scoring {
            s.kinds.insert(model.kind.get().clone());
            if defs.first(cx, "scoring model", &model.name) {
                s.models
                    .insert(model.name.get().clone(), model.kind.get().clone());
            }
        }
        for t in &m.tests {
            defs.first(cx, "test", &t.name);
        }
    }
    s
}

impl Symbols {
    /// Checks a reference to a defined name, with a suggestion when missing.
    pub fn check<'n>(
        &self,
        cx: &mut Cx,
        what: &str,
        name: &Located<String>,
        defined: impl IntoIterator<Item = &'n String> + Clone,
    ) -> bool {
        let found = defined.clone().into_iter().any(|d| d == name.get());
        if !found && !self.incomplete {
            let hint = suggestion(name.get(), defined.into_iter().map(String::as_str));
            cx.error(
                name,
                Code::UnknownName,
                format!("unknown {what} \"{}\"{hint}", name.get()),
            );
        }
        found
    }

    /// Reports a reference to something not defined, unless an unreadable
    /// file may define it.
    pub fn missing<T>(&self, cx: &mut Cx, at: &Located<T>, message: String) {
        if !self.incomplete {
            cx.error(at, Code::UnknownName, message);
        }
    }

    /// Checks a template reference and marks it used.
    pub fn template(&self, cx: &mut Cx, name: &Text) -> bool {
        self.mark_used("template", name.get());
        let names: Vec<String> = self.templates.keys().cloned().collect();
        self.check(cx, "template", name, &names)
    }

    /// Checks a sequence reference and marks it used.
    pub fn sequence(&self, cx: &mut Cx, name: &Text) -> bool {
        self.mark_used("sequence", name.get());
        self.check(cx, "sequence", name, self.sequences.keys())
    }

    fn mark_used(&self, what: &'static str, name: &str) {
        self.used.borrow_mut().insert((what, name.to_owned()));
    }

    /// Warns about templates and sequences nothing refers to.
    pub fn warn_unused(&self, cx: &mut Cx) {
        if self.incomplete {
            return;
        }
        let used = self.used.borrow();
        for (name, at) in &self.templates {
            if !used.contains(&("template", name.clone())) {
                cx.warning_at(
                    at.clone(),
                    Code::Unused,
                    format!("template \"{name}\" is never used"),
                );
            }
        }
        for (name, at) in &self.sequence_positions {
            if !used.contains(&("sequence", name.clone())) {
                cx.warning_at(
                    at.clone(),
                    Code::Unused,
                    format!("sequence \"{name}\" is never enrolled in by any rule or threshold"),
                );
            }
        }
    }
}
