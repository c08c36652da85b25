//! `settings:`, `calendars:` and `team:`.

use super::context::Cx;
use super::symbols::Symbols;
use crate::config::diagnostic::Code;
use crate::config::loader::SourceSet;
use crate::config::model::{
    CalendarSpec, EmailSettingsSpec, SettingsSpec, SmsProvider, SmsSettingsSpec, Text,
};
use crate::config::values;
use crate::config::workflows::{
    Calendar, Limits, Person, QuietHours, Settings, SigningSecret, SmsSettings, Team,
};
use chrono::Weekday;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The shortest `keep_events`: the deduplication window of event ids.
const MIN_KEEP_EVENTS: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Compiles the one `settings:` section, or the defaults.
pub fn compile_settings(set: &SourceSet, cx: &mut Cx) -> Settings {
    let mut out = Settings::default();
    let Some((file, spec)) = set
        .files
        .iter()
        .find_map(|f| f.model.settings.as_ref().map(|s| (f, s.get())))
    else {
        return out;
    };
    cx.enter_file(&file.path, &file.text);
    let SettingsSpec {
        public_url,
        timezone,
        email,
        webhooks,
        retry,
        keep_runs,
        keep_events,
        mailboxes,
        sms,
    } = spec;
    // Empty is unset, so `${DEALFLOW_PUBLIC_URL:-}` can leave the default.
    if let Some(url) = public_url.as_ref().filter(|u| !u.get().is_empty()) {
        if url.get().starts_with("http://") || url.get().starts_with("https://") {
            out.public_url = Some(url.get().trim_end_matches('/').to_owned());
        } else {
            cx.error(
                url,
                Code::Value,
                "public_url must start with http:// or https://",
            );
        }
    }
    if let Some(tz) = timezone
        .as_ref()
        .and_then(|t| cx.parsed(t, values::parse_timezone))
    {
        out.timezone = tz;
    }
    if let Some(email) = email {
        compile_email(email, &mut out, cx);
    }
    if let Some(w) = webhooks {
        out.webhook_allow_hosts = w
            .allow_hosts
            .iter()
            .map(|h| h.get().to_lowercase())
            .collect();
        if let Some(t) = w
            .timeout
            .as_ref()
            .and_then(|t| cx.positive_duration(t, "timeout"))
        {
            out.webhook_timeout = t;
        }
    }
    if let Some(r) = retry {
        if let Some(d) = r
            .first
            .as_ref()
            .and_then(|t| cx.positive_duration(t, "first"))
        {
            out.retry.first = d;
        }
        if let Some(d) = r
            .max_delay
            .as_ref()
            .and_then(|t| cx.positive_duration(t, "max_delay"))
        {
            out.retry.max_delay = d;
        }
        if let Some(a) = &r.attempts {
            if *a.get() == 0 {
                cx.error(a, Code::Value, "attempts must be at least 1");
            } else {
                out.retry.attempts = *a.get();
            }
        }
    }
    if let Some(d) = keep_runs
        .as_ref()
        .and_then(|t| cx.positive_duration(t, "keep_runs"))
    {
        out.keep_runs = d;
    }
    if let Some(text) = keep_events
        && let Some(d) = cx.positive_duration(text, "keep_events")
    {
        if d < MIN_KEEP_EVENTS {
            cx.error(
                text, Code::Value,
                "keep_events must be at least 7d: event ids are remembered for deduplication that long (SPEC §7)",
            );
        } else {
            out.keep_events = d;
        }
    }
    out.mailboxes = super::mailboxes::compile(mailboxes, cx);
    out.sms = sms.as_ref().and_then(|s| compile_sms(s, cx));
    out
}

/// `settings.sms`; `None` (with errors) when it cannot carry a text.
fn compile_sms(spec: &SmsSettingsSpec, cx: &mut Cx) -> Option<SmsSettings> {
    let provider = spec
        .provider
        .as_ref()
        .map_or(SmsProvider::Twilio, |p| *p.get());
    let url = match (&spec.url, provider) {
        (Some(u), _) if !u.get().is_empty() => {
            let text = u.get();
            if !(text.starts_with("http://") || text.starts_with("https://")) {
                cx.error(
                    u,
                    Code::Value,
                    "sms url must start with http:// or https://",
                );
                return None;
            }
            text.trim_end_matches('/').to_owned()
        }
        (_, SmsProvider::Twilio) => "https://api.twilio.com".to_owned(),
        (_, SmsProvider::Http) => {
            cx.error(
                &spec.token,
                Code::Missing,
                "the http sms provider needs url: the address texts are posted to",
            );
            return None;
        }
    };
    let account = spec.account.as_ref().map(|a| a.get().trim().to_owned());
    let account = match (account, provider) {
        (Some(a), _) if !a.is_empty() => a,
        (_, SmsProvider::Twilio) => {
            cx.error(
                &spec.token,
                Code::Missing,
                "twilio needs account: your Account SID (AC...), e.g. ${TWILIO_ACCOUNT_SID}",
            );
            return None;
        }
        (_, SmsProvider::Http) => String::new(),
    };
    if spec.token.get().trim().is_empty() {
        cx.error(
            &spec.token,
            Code::Env,
            "sms token is empty; set it from the environment, e.g. ${TWILIO_AUTH_TOKEN}",
        );
        return None;
    }
    let from = cx.parsed(&spec.from, |t| {
        crate::state::phone::e164(t).map(str::to_owned)
    });
    let quiet_hours = match &spec.quiet_hours {
        None => Some(None),
        Some(q) => cx.parsed(q, parse_quiet_hours).map(Some),
    };
    Some(SmsSettings {
        provider,
        url,
        account,
        token: SigningSecret(spec.token.get().clone()),
        from: from?,
        quiet_hours: quiet_hours?,
    })
}

/// `HH:MM-HH:MM`, across midnight when the end comes first (`21:00-08:00`).
fn parse_quiet_hours(text: &str) -> Result<QuietHours, String> {
    let (start, end) = text.split_once('-').ok_or_else(|| {
        format!("invalid quiet_hours \"{text}\"; write HH:MM-HH:MM, e.g. 21:00-08:00")
    })?;
    let hours = QuietHours {
        start: values::parse_time_of_day(start)?,
        end: values::parse_time_of_day(end)?,
    };
    if hours.start == hours.end {
        return Err(format!(
            "quiet_hours \"{text}\" start and end at the same minute; leave quiet_hours out to text at any hour"
        ));
    }
    Ok(hours)
}

fn compile_email(email: &EmailSettingsSpec, out: &mut Settings, cx: &mut Cx) {
    if let Some(t) = &email.transport {
        check_transport(t, cx);
        out.email_transport = Some(t.get().clone());
        if t.get().starts_with("smtp") {
            warn_before_real_mail(t, email, out.public_url.is_some(), cx);
        }
    }
    if let Some(from) = &email.from {
        if from.get().contains('@') {
            out.email_from = Some(from.get().clone());
        } else {
            cx.error(
                from,
                Code::Value,
                "from must be an email address, e.g. \"Acme Sales <sales@acme.example>\"",
            );
        }
    }
    out.postal_address = email.postal_address.as_ref().map(|p| p.get().clone());
    if let Some(limits) = &email.limits {
        let mut rate = |t: &Option<Text>| t.as_ref().and_then(|t| cx.parsed(t, values::parse_rate));
        out.limits = Limits {
            per_mailbox: rate(&limits.per_mailbox),
            per_domain: rate(&limits.per_domain),
            per_contact: rate(&limits.per_contact),
        };
    }
    if let Some(policy) = &email.on_uncertain {
        out.on_uncertain = *policy.get();
    }
}

/// Mail that reaches real prospects needs an unsubscribe link they can
/// open and the sender's postal address (CAN-SPAM); neither is checked for
/// the maildir, where nothing leaves the machine.
fn warn_before_real_mail(t: &Text, email: &EmailSettingsSpec, public_url: bool, cx: &mut Cx) {
    if !public_url {
        cx.warning(
            t, Code::Compliance,
            "settings.public_url is not set, so unsubscribe links point at the address the daemon listens on; set it to the address prospects can reach",
        );
    }
    if email.postal_address.is_none() {
        cx.warning(
            t, Code::Compliance,
            "settings.email.postal_address is not set; emails to prospects must carry the sender's postal address (CAN-SPAM)",
        );
    }
}

/// Accepts lettre's URL forms and `maildir:PATH`; warns about plain SMTP
/// to another machine, where credentials and mail would cross in clear.
fn check_transport(t: &Text, cx: &mut Cx) {
    let url = t.get();
    if let Some(path) = url.strip_prefix("maildir:") {
        if path.is_empty() {
            cx.error(
                t,
                Code::Value,
                "maildir: needs a folder, e.g. maildir:./var/outbox",
            );
        }
        return;
    }
    let rest = url
        .strip_prefix("smtp://")
        .or_else(|| url.strip_prefix("smtps://"));
    let Some(rest) = rest else {
        cx.error(
            t,
            Code::Value,
            "unknown mail transport; use smtp://host:port, smtps://host:port or maildir:PATH",
        );
        return;
    };
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let host = host_port.split(['/', '?', ':']).next().unwrap_or("");
    if host.is_empty() {
        cx.error(
            t,
            Code::Value,
            "mail transport has no host, e.g. smtp://mail.acme.example:587",
        );
        return;
    }
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.");
    let tls = url.starts_with("smtps://")
        || url.contains("tls=required")
        || url.contains("tls=opportunistic");
    if !loopback && !tls {
        cx.warning(t, Code::Insecure, "plain SMTP to another machine sends passwords and mail unencrypted; use smtps:// or add ?tls=required");
    }
}

/// Compiles every calendar.
pub fn compile_calendars(set: &SourceSet, cx: &mut Cx) -> BTreeMap<String, Arc<Calendar>> {
    let mut out = BTreeMap::new();
    for file in &set.files {
        cx.enter_file(&file.path, &file.text);
        for (name, spec) in &file.model.calendars {
            if let Some(c) = compile_calendar(spec, cx) {
                out.entry(name.get().clone()).or_insert_with(|| Arc::new(c));
            }
        }
    }
    out
}

/// Compiles one calendar, named or inline.
pub fn compile_calendar(spec: &CalendarSpec, cx: &mut Cx) -> Option<Calendar> {
    let timezone = cx.parsed(&spec.timezone, values::parse_timezone);
    let days = match &spec.days {
        None => Some(ALL_DAYS.to_vec()),
        Some(list) => {
            let parsed: Vec<Option<Weekday>> = list
                .iter()
                .map(|d| cx.parsed(d, values::parse_weekday))
                .collect();
            if list.is_empty() {
                cx.error(
                    &spec.timezone,
                    Code::NoEffect,
                    "days is empty, so this window never opens",
                );
            }
            parsed
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .filter(|d| !d.is_empty())
        }
    };
    let hours = match &spec.hours {
        None => Some(None),
        Some(h) => cx.parsed(h, values::parse_hours).map(Some),
    };
    let holidays: Option<Vec<_>> = spec
        .holidays
        .iter()
        .map(|d| cx.parsed(d, values::parse_date))
        .collect();
    Some(Calendar {
        timezone: timezone?,
        days: days?,
        hours: hours?,
        holidays: holidays?,
    })
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// Compiles people and teams; members and managers must be people.
pub fn compile_team(set: &SourceSet, symbols: &Symbols, cx: &mut Cx) -> Team {
    let mut team = Team::default();
    for file in &set.files {
        let Some(spec) = &file.model.team else {
            continue;
        };
        cx.enter_file(&file.path, &file.text);
        for p in &spec.people {
            if !p.email.get().contains('@') {
                cx.error(
                    &p.email,
                    Code::Value,
                    format!("\"{}\" is not an email address", p.email.get()),
                );
            }
            let timezone = p
                .timezone
                .as_ref()
                .and_then(|t| cx.parsed(t, values::parse_timezone));
            if let Some(m) = &p.manager {
                symbols.check(cx, "person", m, &symbols.people);
            }
            team.people.entry(p.email.get().clone()).or_insert(Person {
                email: p.email.get().clone(),
                name: p.name.as_ref().map(|n| n.get().clone()),
                timezone,
                manager: p.manager.as_ref().map(|m| m.get().clone()),
            });
        }
        for (name, members) in &spec.teams {
            if members.is_empty() {
                cx.error(
                    name,
                    Code::Missing,
                    format!("team \"{}\" has no members", name.get()),
                );
            }
            for m in members {
                symbols.check(cx, "person", m, &symbols.people);
            }
            team.teams
                .entry(name.get().clone())
                .or_insert_with(|| members.iter().map(|m| m.get().clone()).collect());
        }
    }
    team
}
