//! The time machinery end to end on the virtual clock: sequences, windows,
//! stalls, overdue tasks and schedules, through the real engine and store.

use super::{Entry, TimedEvent, Timeline};
use crate::config::Workflows;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value as Json, json};

fn workflows(yaml: &str) -> Workflows {
    crate::config::load_for_tests(yaml)
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn event(at: DateTime<Utc>, event_type: &str, record: &str, fields: Json) -> TimedEvent {
    super::timed_event(at, event_type, record, fields)
}

fn simulate(w: &Workflows, start: &str, events: Vec<TimedEvent>, span: Duration) -> Timeline {
    let start = t(start);
    let run = super::run(w, start, events, start + span);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(run)
        .unwrap()
}

fn of<'a>(timeline: &'a Timeline, kind: &str) -> Vec<&'a Entry> {
    timeline.entries.iter().filter(|e| e.kind == kind).collect()
}

fn text(e: &Entry, field: &str) -> String {
    e.fields
        .get(field)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

const CADENCE: &str = r#"
calendars:
  weekdays:
    timezone: America/New_York
    days: [mon, tue, wed, thu, fri]
    hours: "09:00-17:00"
    holidays: ["2026-03-04"]
sequences:
  - name: cadence
    for: lead
    send_window: weekdays
    recipient_timezone: "{{ lead.timezone | default('America/New_York') }}"
    steps:
      - { id: one, email: { subject: "One", body: "Hi" } }
      - wait: 1d
      - { id: two, email: { subject: "Two", body: "Again", thread: one } }
      - wait: 2s
      - id: check
        if: lead.hot is defined
        then: [ { exit: hot } ]
      - { id: three, task: { title: "Call", due: 1h } }
rules:
  - name: start
    for: lead
    on: signed.up
    do: [ { enroll: cadence } ]
"#;

#[test]
fn a_cadence_waits_for_the_window_skips_holidays_and_threads() {
    let w = workflows(CADENCE);
    // Monday 2026-03-02 06:00 New York: before the window opens.
    let start = "2026-03-02T11:00:00Z";
    let events = vec![event(
        t(start),
        "signed.up",
        "lead/L1",
        json!({"email": "a@p.example"}),
    )];
    let timeline = simulate(&w, start, events, Duration::days(10));
    let emails = of(&timeline, "email");
    assert_eq!(emails.len(), 2, "{:#?}", timeline.entries);
    let local = |e: &Entry| e.at.with_timezone(&e.zone).format("%a %H").to_string();
    assert_eq!(local(emails[0]), "Mon 09");
    // One day later is Tuesday; the holiday Wednesday is not involved.
    assert_eq!(local(emails[1]), "Tue 09");
    assert!(text(emails[1], "thread").ends_with("-one"));
    let tasks = of(&timeline, "task");
    assert_eq!(tasks.len(), 1);
    assert_eq!(text(tasks[0], "step"), "three");
    assert_eq!(of(&timeline, "sequence.completed").len(), 1);
}

#[test]
fn the_recipient_zone_decides_the_send_hour() {
    let w = workflows(CADENCE);
    let start = "2026-03-02T11:00:00Z";
    let fields = json!({"email": "a@p.example", "timezone": "Europe/London"});
    let timeline = simulate(
        &w,
        start,
        vec![event(t(start), "signed.up", "lead/L1", fields)],
        Duration::days(3),
    );
    let first = of(&timeline, "email")[0];
    assert_eq!(first.zone, chrono_tz::Tz::Europe__London);
    // 11:00 UTC is 11:00 in London: open, so it goes at once.
    assert_eq!(first.at, t(start));
}

#[test]
fn a_text_waits_for_quiet_hours_to_end_in_the_recipients_zone() {
    let w = workflows(
        r#"
settings:
  sms: { account: AC1, token: t0ken, from: "+15550001111", quiet_hours: "20:00-08:00" }
sequences:
  - name: texts
    for: lead
    recipient_timezone: "{{ lead.timezone }}"
    steps:
      - { id: hello, sms: { body: "Hi" } }
      - wait: 1h
      - { id: again, sms: { body: "Still there?" } }
rules:
  - { name: go, for: lead, on: signed.up, do: [ { enroll: texts } ] }
"#,
    );
    // 03:00 UTC is 22:00 in Chicago (CDT): quiet until 08:00 there.
    let start = "2026-04-07T03:00:00Z";
    let fields =
        json!({"phone": "+15551230001", "sms_consent": true, "timezone": "America/Chicago"});
    let timeline = simulate(
        &w,
        start,
        vec![event(t(start), "signed.up", "lead/L1", fields)],
        Duration::days(1),
    );
    let texts = of(&timeline, "sms");
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert_eq!(texts[0].at, t("2026-04-07T13:00:00Z"));
    assert_eq!(texts[0].zone, chrono_tz::Tz::America__Chicago);
    assert_eq!(texts[1].at, t("2026-04-07T14:00:00Z"));
}

#[test]
fn an_unknown_recipient_zone_sends_in_the_window_zone_and_says_so() {
    let w = workflows(CADENCE);
    let start = "2026-03-02T11:00:00Z"; // 06:00 in New York: before the window
    let fields = json!({"email": "a@p.example", "timezone": "Mars/Olympus"});
    let timeline = simulate(
        &w,
        start,
        vec![event(t(start), "signed.up", "lead/L1", fields)],
        Duration::days(1),
    );
    let first = of(&timeline, "email")[0];
    assert_eq!(first.zone, chrono_tz::Tz::America__New_York);
    assert_eq!(
        first.at.with_timezone(&first.zone).format("%H").to_string(),
        "09"
    );
}

#[test]
fn a_branch_exits_with_its_reason() {
    let w = workflows(CADENCE);
    let start = "2026-03-02T15:00:00Z";
    let fields = json!({"email": "a@p.example", "hot": true});
    let timeline = simulate(
        &w,
        start,
        vec![event(t(start), "signed.up", "lead/L1", fields)],
        Duration::days(5),
    );
    let exits = of(&timeline, "sequence.exited");
    assert_eq!(exits.len(), 1);
    assert_eq!(text(exits[0], "reason"), "hot");
    assert!(of(&timeline, "task").is_empty());
}

#[test]
fn an_exit_event_stops_the_cadence_before_the_next_step() {
    let w = workflows(&CADENCE.replace(
        "    send_window: weekdays\n",
        "    exit_on: [email.replied]\n",
    ));
    let start = "2026-03-02T15:00:00Z";
    let events = vec![
        event(
            t(start),
            "signed.up",
            "lead/L1",
            json!({"email": "a@p.example"}),
        ),
        // A reply one second before step two is due.
        event(
            t(start) + Duration::days(1) - Duration::seconds(1),
            "email.replied",
            "lead/L1",
            json!({}),
        ),
    ];
    let timeline = simulate(&w, start, events, Duration::days(5));
    assert_eq!(of(&timeline, "email").len(), 1);
    let exits = of(&timeline, "sequence.exited");
    assert_eq!(text(exits[0], "reason"), "email.replied");
}

#[test]
fn enrolling_twice_does_nothing_and_reenroll_never_holds() {
    let w = workflows(CADENCE);
    let start = "2026-03-02T15:00:00Z";
    let events = (0..3)
        .map(|d| {
            event(
                t(start) + Duration::days(d * 3),
                "signed.up",
                "lead/L1",
                json!({"email": "a@p.example"}),
            )
        })
        .collect();
    let timeline = simulate(&w, start, events, Duration::days(12));
    assert_eq!(of(&timeline, "sequence.enrolled").len(), 1);
    assert_eq!(of(&timeline, "email").len(), 2);
}

const STALLS: &str = r#"
settings:
  email: { from: "Acme <sales@x.example>" }
team:
  people: [ { email: ana@x.example } ]
pipelines:
  - name: b2b
    for: deal
    stages:
      - { name: open, stall_after: 3s, stall_repeat: 2s }
      - { name: closing }
rules:
  - name: nag
    for: deal
    on: stage.stalled
    do: [ { task: { title: "Nag {{ event.count }}", owner: ana@x.example, due: 1s } } ]
  - name: late
    for: deal
    on: task.overdue
    do: [ { set: { late: "{{ event.task_id }}" } } ]
  - name: digest
    on: { schedule: "0 8 * * 1-5", timezone: America/New_York }
    for_each: { kind: deal, if: "deal.stage == 'open'" }
    do: [ { notify: { to: ana@x.example, subject: "{{ deal.id }} still open" } } ]
"#;

#[test]
fn stalls_repeat_and_stop_when_the_record_moves_on() {
    let start = "2026-03-02T15:00:00Z";
    let s = t(start);
    let w = workflows(&format!(
        "{STALLS}\n  - name: advance\n    for: deal\n    on: deal.moved\n    do: [ {{ move: closing }} ]\n"
    ));
    let events = vec![
        event(s, "deal.opened", "deal/D1", json!({})),
        event(s + Duration::seconds(6), "deal.moved", "deal/D1", json!({})),
    ];
    let timeline = simulate(&w, start, events, Duration::seconds(10));
    let stalls: Vec<(i64, u64)> = of(&timeline, "stage.stalled")
        .iter()
        .map(|e| {
            (
                (e.at - s).num_seconds(),
                e.fields["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // At 3s and 5s; the move at 6s deletes the 7s repeat.
    assert_eq!(stalls, [(3, 1), (5, 2)]);
    // A stall changes the record; it must not look new (a bug once did).
    assert_eq!(of(&timeline, "record.created").len(), 1);
    let overdue = of(&timeline, "task.overdue");
    assert_eq!(overdue.len(), 2, "each nag task goes overdue once");
}

#[test]
fn a_completed_task_never_goes_overdue() {
    let w = workflows(&STALLS.replace("stall_repeat: 2s", "stall_repeat: 1d"));
    let start = "2026-03-02T15:00:00Z";
    let s = t(start);
    // The first nag task's id, from a run without the completion.
    let first = simulate(
        &w,
        start,
        vec![event(s, "deal.opened", "deal/D1", json!({}))],
        Duration::seconds(10),
    );
    let stall_run_task = first
        .entries
        .iter()
        .find(|e| e.kind == "task.created")
        .map(|e| text(e, "task_id"))
        .unwrap();
    let mut complete = event(
        s + Duration::milliseconds(3500),
        "task.completed",
        "deal/D1",
        json!({}),
    );
    complete
        .event
        .data
        .insert("task_id".into(), json!(stall_run_task));
    let timeline = simulate(
        &w,
        start,
        vec![event(s, "deal.opened", "deal/D1", json!({})), complete],
        Duration::seconds(10),
    );
    assert!(!of(&timeline, "task.completed").is_empty());
    let overdue: Vec<String> = of(&timeline, "task.overdue")
        .iter()
        .map(|e| text(e, "task_id"))
        .collect();
    assert!(!overdue.contains(&stall_run_task), "{overdue:?}");
}

#[test]
fn a_schedule_runs_for_each_matching_record_in_its_zone() {
    let w = workflows(&STALLS.replace("stall_after: 3s, stall_repeat: 2s", "stall_after: 30d"));
    // Sunday noon UTC; the next weekday 08:00 New York is Monday 13:00 UTC.
    let start = "2026-03-01T12:00:00Z";
    let s = t(start);
    let events = vec![
        event(s, "deal.opened", "deal/D1", json!({})),
        event(s, "deal.opened", "deal/D2", json!({})),
    ];
    let timeline = simulate(&w, start, events, Duration::days(2));
    let notices = of(&timeline, "notify");
    let digest: Vec<&&Entry> = notices
        .iter()
        .filter(|e| text(e, "rule") == "digest")
        .collect();
    assert_eq!(digest.len(), 2, "{:#?}", notices);
    assert!(digest.iter().all(|e| e.at == t("2026-03-02T13:00:00Z")));
}

#[test]
fn a_workflow_test_that_expects_what_never_happens_fails() {
    let yaml = format!(
        "{CADENCE}\ntests:\n  - name: wrong\n    start: \"2026-03-02T15:00:00Z\"\n    events:\n      - {{ type: signed.up, record: {{ kind: lead, id: L1, fields: {{ email: a@p.example }} }} }}\n    until: 5d\n    expect:\n      - {{ email: {{ step: two }} }}\n      - {{ email: {{ step: one }} }}\n    expect_not:\n      - {{ task: {{ step: three }} }}\n"
    );
    let w = workflows(&yaml);
    let outcomes = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(super::workflow_test::run_all(&w))
        .unwrap();
    let failures = &outcomes[0].failures;
    assert!(failures[0].contains("came earlier"), "{failures:#?}");
    assert!(
        failures[1].starts_with("not expected, but happened: { task"),
        "{failures:#?}"
    );
}

#[test]
fn sends_that_delivery_would_refuse_are_marked_failing() {
    // No settings.email.from and no owner: the email has no sender. The
    // webhook's host is a private address the guard refuses.
    let w = workflows(
        r#"
rules:
  - name: greet
    for: lead
    on: signed.up
    do:
      - webhook: { url: "http://10.1.2.3/hooks" }
      - email: { subject: "Hi", body: "Hello" }
"#,
    );
    let start = "2026-03-02T15:00:00Z";
    let events = vec![event(
        t(start),
        "signed.up",
        "lead/L1",
        json!({ "email": "pat@p.example" }),
    )];
    let timeline = simulate(&w, start, events, Duration::hours(1));
    let hook = of(&timeline, "webhook")[0];
    assert!(
        text(hook, "fails").contains("10.1.2.3"),
        "{:?}",
        hook.fields
    );
    assert!(
        hook.line().contains("FAILS: 10.1.2.3 is a private"),
        "{}",
        hook.line()
    );
    let email = of(&timeline, "email")[0];
    assert!(
        text(email, "fails").contains("no sender: the record has no owner"),
        "{:?}",
        email.fields
    );
}

/// Every event a run of the default workflows raises, beyond the ones sent
/// in, is a built-in type, an internal one, or one an `emit:` names: the
/// types say so at each raising site, and this runs them all.
#[test]
fn every_event_the_daemon_raises_is_a_builtin_type() {
    use crate::config::workflows::Action;
    use crate::store::{EventTable, KvStore, MemoryBackend};
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let (w, diagnostics) = crate::config::load(&folder, &std::collections::HashMap::new());
    let w = w.unwrap_or_else(|| panic!("{diagnostics:#?}"));
    let emitted: std::collections::HashSet<&str> = w
        .rules
        .iter()
        .flat_map(|r| r.actions.iter())
        .chain(
            w.scoring
                .iter()
                .flat_map(|m| m.thresholds.iter().flat_map(|t| t.actions.iter())),
        )
        .filter_map(|a| match a {
            Action::Emit { event_type, .. } => Some(event_type.as_str()),
            _ => None,
        })
        .collect();
    let start = t("2026-03-02T08:00:00Z");
    let sent: Vec<&String> = w.trigger_index.keys().collect();
    let mut events = Vec::new();
    for (i, event_type) in sent.iter().enumerate() {
        for kind in &w.kinds {
            let fields = json!({ "email": format!("p{i}@p.example"), "name": "Pat", "company": "Acme", "employees": 500, "country": "US", "title": "VP Sales" });
            let at = start + Duration::minutes(i as i64);
            events.push(event(at, event_type, &format!("{kind}/R{i}"), fields));
        }
    }
    assert!(events.len() > 5, "the default workflows name triggers");
    let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(super::run_on(
            &store,
            &w,
            start,
            events,
            start + Duration::days(60),
        ))
        .unwrap();
    let raised: Vec<String> = store
        .events_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .filter(|t| !sent.contains(&t))
        .collect();
    assert!(raised.iter().any(|t| t == "record.created"), "{raised:?}");
    for t in &raised {
        assert!(
            crate::state::BuiltinEvent::is_builtin(t)
                || t.starts_with(crate::engine::internal::PREFIX)
                || emitted.contains(t.as_str()),
            "{t} is raised but not a built-in type"
        );
    }
}
