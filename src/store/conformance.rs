//! One suite, run against every backend: what any store must do.

use super::*;
use crate::state::{Task, TaskStatus};
use chrono::TimeZone;
use serde_json::{Map, json};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_772_000_000 + secs, 0).single().unwrap()
}

fn key(kind: &str, id: &str) -> RecordKey {
    RecordKey {
        kind: kind.into(),
        id: id.into(),
    }
}

fn event(id: Option<&str>, record: &str) -> NewEvent {
    NewEvent {
        id: id.map(String::from),
        event_type: "form.submitted".into(),
        record: key("lead", record),
        fields: Map::new(),
        data: Map::new(),
        occurred_at: at(0),
        depth: 0,
    }
}

fn task(id: &str, owner: Option<&str>, status: TaskStatus) -> Task {
    Task {
        id: id.into(),
        record: key("lead", "L1"),
        title: format!("task {id}"),
        notes: None,
        owner: owner.map(String::from),
        due_at: None,
        status,
        created_at: at(0),
        completed_at: None,
        created_by: "rule".into(),
        step: None,
        from_handoff: false,
    }
}

fn run(id: &str, rule: &str, record: &str) -> Run {
    Run {
        id: id.into(),
        rule: rule.into(),
        event_id: "e".into(),
        event_type: "x".into(),
        record: key("lead", record),
        version: "v1".into(),
        condition: None,
        matched: true,
        saw: Default::default(),
        actions: vec![],
        at: at(0),
        error: None,
    }
}

pub fn appends_in_order_and_deduplicates<S: Store>(s: &S) {
    let first = s
        .append_events(vec![
            event(Some("a"), "L1"),
            event(None, "L2"),
            event(Some("a"), "L3"),
        ])
        .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|a| (a.seq, a.duplicate))
            .collect::<Vec<_>>(),
        [(1, false), (2, false), (1, true)]
    );
    assert_eq!(first[1].id, "gen-2");
    let again = s
        .append_events(vec![event(Some("a"), "L1"), event(Some("b"), "L1")])
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!((again[1].seq, again[1].duplicate), (3, false));
    let all = s.events_after(0, 10).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(s.events_after(2, 10).unwrap().len(), 1);
    assert_eq!(s.cursor().unwrap(), 0);
    assert_eq!(s.last_seq().unwrap(), 3);
}

pub fn events_read_from_any_point_in_order<S: Store>(s: &S) {
    // 40 events in one append (rows of 4), 3 raised by a commit, 6 more
    // with a duplicate among them, then one: rows of every length.
    let ids = |from: u64, to: u64| (from..to).map(|n| event(Some(&format!("x{n}")), "L1"));
    s.append_events(ids(1, 41).collect()).unwrap();
    s.commit(Changes::from(crate::state::Effects {
        events: vec![event(None, "L1"); 3],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let more = s
        .append_events(ids(44, 47).chain(ids(5, 6)).chain(ids(47, 50)).collect())
        .unwrap();
    assert!(more[3].duplicate);
    s.append_events(ids(50, 51).collect()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 50);
    let seqs = |after: u64, limit: usize| -> Vec<u64> {
        s.events_after(after, limit)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    for after in 0..=50 {
        for limit in [1, 3, 5, 16, 100] {
            let want: Vec<u64> = (after + 1..=50).take(limit).collect();
            assert_eq!(seqs(after, limit), want, "after {after}, limit {limit}");
        }
    }
    let all = s.events_after(0, 100).unwrap();
    assert_eq!(all[40].id, "gen-41");
    assert_eq!(all[43].id, "x44");
    assert_eq!(all[49].id, "x50");
}

pub fn commit_is_one_unit_with_cursor_and_chained_events<S: Store>(s: &S) {
    s.append_events(vec![event(Some("a"), "L1")]).unwrap();
    let mut record = Record::new(key("lead", "L1"), at(0));
    record.owner = Some("ana@x".into());
    s.commit(Changes::from(crate::state::Effects {
        records: vec![record.clone()],
        events: vec![event(None, "L1")],
        counters: vec![("rr/sdr".into(), 7)],
        handled: Some(1),
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.record(&record.key).unwrap(), Some(record));
    assert_eq!(s.cursor().unwrap(), 1);
    assert_eq!(s.counter("rr/sdr").unwrap(), 7);
    assert_eq!(s.counter("never").unwrap(), 0);
    let chained = s.events_after(1, 10).unwrap();
    assert_eq!(chained.len(), 1);
    assert_eq!(chained[0].seq, 2);
}

pub fn fired_timer_events_follow_raised_ones_and_keep_their_ids<S: Store>(s: &S) {
    s.commit(Changes {
        round: crate::state::Effects {
            events: vec![event(None, "L1")],
            ..crate::state::Effects::default()
        },
        fired: vec![event(Some("step/lead:L1/1"), "L1")],
        ..Changes::default()
    })
    .unwrap();
    let log = s.events_after(0, 10).unwrap();
    let ids: Vec<&str> = log.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["gen-1", "step/lead:L1/1"]);
    // The timer's id names it; it is not an idempotency key, so an outside
    // event that happens to carry it is not taken for a duplicate.
    let outside = s
        .append_events(vec![event(Some("step/lead:L1/1"), "L1")])
        .unwrap();
    assert_eq!((outside[0].seq, outside[0].duplicate), (3, false));
}

/// However many records a store keeps decoded, it answers each as last
/// written.
pub fn records_read_as_last_written<S: Store>(s: &S) {
    let record = |id: &str, n: i64| {
        let mut r = Record::new(key("lead", id), at(0));
        r.fields.insert("n".into(), json!(n));
        r
    };
    let n_of = |id: &str| {
        s.record(&key("lead", id))
            .unwrap()
            .map(|r| r.fields["n"].clone())
    };
    for round in 0..3 {
        s.commit(Changes::from(crate::state::Effects {
            records: vec![record("L1", round), record("L2", round * 10)],
            ..crate::state::Effects::default()
        }))
        .unwrap();
        s.commit(Changes::from(crate::state::Effects {
            records: vec![record("L3", round)],
            ..crate::state::Effects::default()
        }))
        .unwrap();
        assert_eq!(n_of("L1"), Some(json!(round)));
        assert_eq!(n_of("L2"), Some(json!(round * 10)));
        assert_eq!(n_of("L3"), Some(json!(round)));
    }
    assert_eq!(n_of("L9"), None);
    let page = s.records_of_kind("lead", None, 10).unwrap();
    let listed: Vec<_> = page.items.iter().map(|r| r.fields["n"].clone()).collect();
    assert_eq!(listed, [json!(2), json!(20), json!(2)]);
}

#[test]
fn a_store_keeping_one_record_or_none_reads_each_as_last_written() {
    for kept in [0, 1] {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        records_read_as_last_written(&store.keeping_records(kept));
    }
}

pub fn records_page_by_kind<S: Store>(s: &S) {
    let records: Vec<Record> = ["a", "b", "c"]
        .iter()
        .map(|id| Record::new(key("deal", id), at(0)))
        .collect();
    let other = Record::new(key("dealer", "z"), at(0));
    s.commit(Changes::from(crate::state::Effects {
        records: [records.clone(), vec![other]].concat(),
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let page = s.records_of_kind("deal", None, 2).unwrap();
    assert_eq!(page.items, records[..2]);
    let rest = s.records_of_kind("deal", page.next.as_deref(), 2).unwrap();
    assert_eq!(rest.items, records[2..]);
    assert_eq!(rest.next, None);
}

pub fn tasks_filter_and_count_open_by_owner<S: Store>(s: &S) {
    s.commit(Changes::from(crate::state::Effects {
        tasks: vec![
            task("t1", Some("ana"), TaskStatus::Open),
            task("t2", Some("ana"), TaskStatus::Open),
            task("t3", None, TaskStatus::Open),
        ],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.open_task_count("ana").unwrap(), 2);
    let mut done = task("t1", Some("ana"), TaskStatus::Completed);
    done.completed_at = Some(at(5));
    let moved = task("t2", Some("ben"), TaskStatus::Open);
    s.commit(Changes::from(crate::state::Effects {
        tasks: vec![done, moved],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.open_task_count("ana").unwrap(), 0);
    assert_eq!(s.open_task_count("ben").unwrap(), 1);
    let open = TaskFilter {
        status: Some(TaskStatus::Open),
        ..TaskFilter::default()
    };
    let ids: Vec<String> = s
        .tasks(&open, None, 10)
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t2", "t3"]);
    // A rep's open queue, through the open-task index: ben got t2 moved to him.
    let bens = TaskFilter {
        owner: Some("ben".into()),
        status: Some(TaskStatus::Open),
        ..TaskFilter::default()
    };
    let bens: Vec<String> = s
        .tasks(&bens, None, 10)
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(bens, ["t2"]);
    // Of any status, through the owner index: ana's completed t1 (t2 left her).
    let anas = TaskFilter {
        owner: Some("ana".into()),
        ..TaskFilter::default()
    };
    let anas: Vec<(String, TaskStatus)> = s
        .tasks(&anas, None, 10)
        .unwrap()
        .items
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    assert_eq!(anas, [("t1".to_owned(), TaskStatus::Completed)]);
    let unassigned = TaskFilter {
        owner: Some(String::new()),
        ..TaskFilter::default()
    };
    assert_eq!(s.tasks(&unassigned, None, 10).unwrap().items.len(), 1);
    let page = s.tasks(&TaskFilter::default(), None, 2).unwrap();
    assert_eq!(page.next.as_deref(), Some("t2"));
    assert_eq!(
        s.tasks(&TaskFilter::default(), page.next.as_deref(), 2)
            .unwrap()
            .items[0]
            .id,
        "t3"
    );
}

pub fn runs_newest_first_with_filters<S: Store>(s: &S) {
    // Event 2's two runs share a row; a delivery run of event 2, written
    // later, has an id that sorts between them.
    let mut late = run("0002-0-delivery", "b", "L1");
    late.event_type = "delivery".into();
    for runs in [
        vec![
            run("0001-0", "a", "L1"),
            run("0002-0", "b", "L1"),
            run("0002-1", "a", "L1"),
            run("0003-0", "a", "L2"),
        ],
        vec![late],
    ] {
        s.commit(Changes::from(crate::state::Effects {
            runs,
            ..crate::state::Effects::default()
        }))
        .unwrap();
    }
    let ids = |p: Page<Run>| p.items.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.runs(&RunFilter::default(), None, 10).unwrap()),
        ["0003-0", "0002-0-delivery", "0002-1", "0002-0", "0001-0"]
    );
    let rule_a = RunFilter {
        rule: Some("a".into()),
        ..RunFilter::default()
    };
    assert_eq!(
        ids(s.runs(&rule_a, None, 10).unwrap()),
        ["0003-0", "0002-1", "0001-0"]
    );
    let l1 = RunFilter {
        record: Some(key("lead", "L1")),
        ..RunFilter::default()
    };
    // A page at a time, stopping inside a row: none lost, none twice.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s.runs(&l1, after.as_deref(), 1).unwrap();
        paged.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, ["0002-0-delivery", "0002-1", "0002-0", "0001-0"]);
    // A forgotten row leaves its record's listing (and index) too.
    let rows = s.run_rows_in_log_order(None, 10).unwrap();
    let first = rows.iter().find(|r| r.record == key("lead", "L1")).unwrap();
    s.commit(Changes {
        runs_pruned: vec![first.id.clone()],
        ..Changes::default()
    })
    .unwrap();
    assert_eq!(
        ids(s.runs(&l1, None, 10).unwrap()),
        ["0002-0-delivery", "0002-1", "0002-0"]
    );
    let l2 = RunFilter {
        record: Some(key("lead", "L2")),
        ..RunFilter::default()
    };
    assert_eq!(ids(s.runs(&l2, None, 10).unwrap()), ["0003-0"]);
}

pub fn timers_come_due_in_order_and_can_be_deleted<S: Store>(s: &S) {
    let timer = |id: &str, secs| Timer {
        id: id.into(),
        due_at: at(secs),
        event: event(None, "L1"),
    };
    s.commit(Changes::from(crate::state::Effects {
        timers: vec![timer("late", 100), timer("early", 10), timer("mid", 50)],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.next_timer().unwrap(), Some(at(10)));
    let due: Vec<String> = s
        .due_timers(at(60), 10)
        .unwrap()
        .into_iter()
        .map(|t| t.map_or_else(|spoiled| spoiled.id, |t| t.id))
        .collect();
    assert_eq!(due, ["early", "mid"]);
    s.commit(Changes::from(crate::state::Effects {
        timers_done: vec![(at(10), "early".into())],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.next_timer().unwrap(), Some(at(50)));
}

pub fn history_enrollments_suppression<S: Store>(s: &S) {
    let k = key("deal", "D1");
    let visit = |stage: &str, n| StageVisit {
        pipeline: "b2b".into(),
        stage: stage.into(),
        entered_at: at(n),
        exited_at: None,
        owner: None,
        ..StageVisit::default()
    };
    s.commit(Changes::from(crate::state::Effects {
        stage_visits: vec![
            (k.clone(), 1, visit("discovery", 10)),
            (k.clone(), 0, visit("qualified", 0)),
        ],
        enrollments: vec![Enrollment {
            next_step: Some("intro".into()),
            ..Enrollment::new(k.clone(), "s", at(0))
        }],
        suppress: vec![Suppression::new(
            "Pat <Pat@Example.com>",
            "unsubscribed (link)",
            at(0),
        )],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let stages: Vec<String> = s
        .stage_history(&k)
        .unwrap()
        .into_iter()
        .map(|v| v.stage)
        .collect();
    assert_eq!(stages, ["qualified", "discovery"]);
    s.commit(Changes::from(crate::state::Effects {
        stage_visits: vec![(key("deal", "D10"), 0, visit("qualified", 5))],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let mut all = Vec::new();
    s.each_stage_history(&mut |k, visits| all.push((k.id, visits.len())))
        .unwrap();
    assert_eq!(all, [("D1".to_owned(), 2), ("D10".to_owned(), 1)]);
    assert_eq!(s.enrollments(&k).unwrap().len(), 1);
    let active = s.active_enrollments(None, 10).unwrap();
    assert_eq!(active.items.len(), 1);
    assert!(active.next.is_none());
    assert!(
        s.enrollments(&key("deal", "D")).unwrap().is_empty(),
        "prefix of another id must not match"
    );
    for spelling in [
        "pat@example.com",
        " PAT@example.com",
        "<pat@example.com>",
        "P <pat@Example.com>",
    ] {
        assert!(s.is_suppressed(spelling).unwrap(), "{spelling}");
    }
    assert!(!s.is_suppressed("sam@example.com").unwrap());
    let listed = s.suppressions(None, 10).unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].address, "pat@example.com");
    assert_eq!(listed.items[0].reason, "unsubscribed (link)");
    assert_eq!(listed.items[0].at, Some(at(0)));
    s.commit(Changes {
        unsuppress: vec!["Pat <PAT@example.com>".into()],
        ..Changes::default()
    })
    .unwrap();
    assert!(!s.is_suppressed("pat@example.com").unwrap());
    assert!(s.suppressions(None, 10).unwrap().items.is_empty());
}

/// A text's row names the record texted at its number; a receipt is kept
/// under its own key, so the delivery worker's later write of the row
/// (made from the row as it claimed it) does not erase it.
pub fn texts_keep_their_number_and_receipts_apart<S: Store>(s: &S) {
    use crate::state::{Delivery, OutboxStatus, Receipt};
    let text = Delivery::Sms {
        to: "+15551230001".into(),
        body: "Hi".into(),
        zone: None,
    };
    let mut row = OutboxEntry::pending("t1".into(), key("lead", "L1"), text, at(0), "r".into());
    row.status = OutboxStatus::Sending;
    s.commit(Changes::from(crate::state::Effects {
        outbox: vec![row.clone()],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.texted("+15551230001").unwrap(), Some(key("lead", "L1")));
    assert_eq!(s.texted("+15551230002").unwrap(), None);
    let receipt = Receipt {
        status: "delivered".into(),
        error_code: None,
        at: at(5),
    };
    s.commit(Changes {
        receipts: vec![("t1".into(), receipt.clone())],
        ..Changes::default()
    })
    .unwrap();
    row.status = OutboxStatus::Sent;
    row.provider_id = Some("SM1".into());
    s.commit(Changes::from(crate::state::Effects {
        outbox: vec![row.clone()],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let read = s.outbox_entry("t1").unwrap().unwrap();
    assert_eq!(read.receipt, Some(receipt.clone()));
    assert_eq!(read.provider_id.as_deref(), Some("SM1"));
    assert_eq!(s.outbox(None, 10).unwrap().items[0].receipt, Some(receipt));
}

/// Issue 26: with NUL only ending parts, `L9\0x`'s enrollments, runs,
/// outbox rows and score entries read as `L9`'s, and an owner `a\0b`'s
/// tasks as `a`'s. Parts are stuffed, so they never do.
pub fn ids_with_nul_never_read_as_another_records<S: Store>(s: &S) {
    let (plain, tricky) = (key("lead", "L9"), key("lead", "L9\0x"));
    let enrollment =
        |record: &RecordKey, sequence: &str| Enrollment::new(record.clone(), sequence, at(0));
    let mut tricky_run = run("r2", "rule", "L9");
    tricky_run.record = tricky.clone();
    let mut tricky_task = task("t2", Some("a\0b"), TaskStatus::Open);
    tricky_task.record = tricky.clone();
    let texted = |id: &str, record: &RecordKey| {
        let text = crate::state::Delivery::Sms {
            to: "+15551230001".into(),
            body: "Hi".into(),
            zone: None,
        };
        OutboxEntry::pending(id.into(), record.clone(), text, at(0), "r".into())
    };
    s.commit(Changes::from(crate::state::Effects {
        enrollments: vec![enrollment(&plain, "a"), enrollment(&tricky, "x\0a")],
        runs: vec![run("r1", "rule", "L9"), tricky_run],
        tasks: vec![task("t1", Some("a"), TaskStatus::Open), tricky_task],
        outbox: vec![texted("o1", &plain), texted("o2", &tricky)],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let sequences = |k: &RecordKey| -> Vec<String> {
        s.enrollments(k)
            .unwrap()
            .into_iter()
            .map(|e| e.sequence)
            .collect()
    };
    assert_eq!(sequences(&plain), ["a"]);
    assert_eq!(sequences(&tricky), ["x\0a"]);
    let runs = |k: &RecordKey| -> Vec<String> {
        let filter = RunFilter {
            record: Some(k.clone()),
            rule: None,
        };
        s.runs(&filter, None, 10)
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(runs(&plain), ["r1"]);
    assert_eq!(runs(&tricky), ["r2"]);
    let rows = |k: &RecordKey| -> Vec<String> {
        let filter = OutboxFilter {
            status: None,
            record: Some(k.clone()),
        };
        s.outbox_matching(&filter, None, 10)
            .unwrap()
            .items
            .into_iter()
            .map(|o| o.id)
            .collect()
    };
    assert_eq!(rows(&plain), ["o1"]);
    assert_eq!(rows(&tricky), ["o2"]);
    let owned = |owner: &str| -> Vec<String> {
        let filter = TaskFilter {
            owner: Some(owner.into()),
            status: Some(TaskStatus::Open),
            record: None,
        };
        s.tasks(&filter, None, 10)
            .unwrap()
            .items
            .into_iter()
            .map(|t| t.id)
            .collect()
    };
    assert_eq!(owned("a"), ["t1"]);
    assert_eq!(owned("a\0b"), ["t2"]);
    assert_eq!(s.open_task_count("a").unwrap(), 1);
}

pub fn outbox_rows_round_trip<S: Store>(s: &S) {
    use crate::state::{Delivery, OutboxStatus};
    let row = |id: &str, delivery| {
        OutboxEntry::pending(id.into(), key("lead", "L1"), delivery, at(0), "r".into())
    };
    let email = Delivery::Email {
        to: "p@x".into(),
        cc: vec![],
        from: None,
        subject: "Hi".into(),
        body: "Hello".into(),
        format: crate::state::BodyFormat::Markdown,
        audience: crate::state::Audience::Prospect,
        thread: None,
        zone: None,
    };
    let hook = Delivery::Webhook {
        url: "https://h.example".into(),
        method: "POST".into(),
        headers: vec![("a".into(), "b".into())],
        body: json!({"n": 1, "x": [true, null]}).into(),
        secret: Some("s".into()),
    };
    let mut rows = vec![row("o1", email), row("o2", hook)];
    rows[1].next_attempt_at = Some(at(50));
    s.commit(Changes::from(crate::state::Effects {
        outbox: rows.clone(),
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(s.outbox(None, 10).unwrap().items, rows);
    assert_eq!(s.outbox_entry("o2").unwrap(), Some(rows[1].clone()));
    // The delivery queue: due rows by time, the next due time, sending rows.
    let ids = |v: Vec<OutboxEntry>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(s.due_outbox(at(10), 10).unwrap()), ["o1"]);
    assert_eq!(ids(s.due_outbox(at(60), 10).unwrap()), ["o1", "o2"]);
    let mut sending = rows[0].clone();
    sending.status = OutboxStatus::Sending;
    s.commit(Changes::from(crate::state::Effects {
        outbox: vec![sending.clone()],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert_eq!(ids(s.due_outbox(at(60), 10).unwrap()), ["o2"]);
    assert_eq!(s.waiting_outbox(10).unwrap(), 1);
    assert_eq!(ids(s.sending_outbox(10).unwrap()), ["o1"]);
    assert_eq!(s.next_outbox_due().unwrap(), Some(at(50)));
    let mut sent = sending;
    sent.status = OutboxStatus::Sent;
    let mut retry = rows[1].clone();
    retry.status = OutboxStatus::Failed;
    retry.next_attempt_at = Some(at(90));
    s.commit(Changes::from(crate::state::Effects {
        outbox: vec![sent, retry],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    assert!(s.sending_outbox(10).unwrap().is_empty());
    assert!(s.due_outbox(at(60), 10).unwrap().is_empty());
    assert_eq!(ids(s.due_outbox(at(90), 10).unwrap()), ["o2"]);
    let filter = OutboxFilter {
        status: Some(OutboxStatus::Sent),
        record: None,
    };
    assert_eq!(
        ids(s.outbox_matching(&filter, None, 10).unwrap().items),
        ["o1"]
    );
    // By record, through the index: L1's rows only (not L10's), pages and
    // the status filter as with a scan.
    let mut other = row("o3", rows[0].delivery.clone());
    other.record = key("lead", "L10");
    let mut third = row("o4", rows[0].delivery.clone());
    third.status = OutboxStatus::Sent;
    s.commit(Changes::from(crate::state::Effects {
        outbox: vec![other, third],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let of_l1 = |status| OutboxFilter {
        status,
        record: Some(key("lead", "L1")),
    };
    assert_eq!(
        ids(s.outbox_matching(&of_l1(None), None, 10).unwrap().items),
        ["o1", "o2", "o4"]
    );
    let first = s.outbox_matching(&of_l1(None), None, 2).unwrap();
    assert_eq!(first.next.as_deref(), Some("o2"));
    let rest = s
        .outbox_matching(&of_l1(None), first.next.as_deref(), 2)
        .unwrap();
    assert_eq!((ids(rest.items), rest.next), (vec!["o4".to_owned()], None));
    assert_eq!(
        ids(s
            .outbox_matching(&of_l1(Some(OutboxStatus::Sent)), None, 10)
            .unwrap()
            .items),
        ["o1", "o4"]
    );
    // Two versions of a row in one commit: the last one's indexes, only.
    let waiting = row("o5", rows[0].delivery.clone());
    let commit = |rows: Vec<OutboxEntry>| {
        s.commit(Changes::from(crate::state::Effects {
            outbox: rows,
            ..crate::state::Effects::default()
        }))
        .unwrap()
    };
    commit(vec![waiting.clone()]);
    let retried_at = |t: i64| {
        let mut retry = waiting.clone();
        retry.status = OutboxStatus::Failed;
        retry.next_attempt_at = Some(at(t));
        retry
    };
    commit(vec![retried_at(70), retried_at(95)]);
    assert_eq!(ids(s.due_outbox(at(91), 10).unwrap()), ["o3", "o2"]);
    assert_eq!(ids(s.due_outbox(at(99), 10).unwrap()), ["o3", "o2", "o5"]);
}

pub fn score_ledger_pages_newest_first<S: Store>(s: &S) {
    let notes = |seq: u64, model: &str, count: u32| crate::state::ScoreNotes {
        record: key("lead", "L1"),
        event_id: format!("e{seq}"),
        seq,
        at: at(seq as i64),
        entries: (0..count)
            .map(|n| crate::state::ScoreNote {
                model: model.into(),
                rule: format!("r{seq}.{n}").into(),
                points: 1.5,
            })
            .collect(),
    };
    s.commit(Changes::from(crate::state::Effects {
        ledger: vec![notes(1, "m", 2), notes(300, "m", 1), notes(9, "m2", 1)],
        ..crate::state::Effects::default()
    }))
    .unwrap();
    let first = s.score_ledger(&key("lead", "L1"), "m", None, 2).unwrap();
    let rules: Vec<&str> = first.items.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(rules, ["r300.0", "r1.1"]);
    let rest = s
        .score_ledger(&key("lead", "L1"), "m", first.next.as_deref(), 2)
        .unwrap();
    assert_eq!(
        rest.items,
        [crate::state::ScoreEntry {
            record: key("lead", "L1"),
            model: "m".into(),
            rule: "r1.0".into(),
            points: 1.5,
            at: at(1),
            event_id: "e1".into(),
            seq: (1, 0),
        }]
    );
    assert!(rest.next.is_none());
}

pub fn forecast_snapshots_are_found_on_or_before_a_day<S: Store>(s: &S) {
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let snapshot = |pipeline: &str, d: u32, weighted: f64| crate::state::ForecastSnapshot {
        pipeline: pipeline.into(),
        day: day(d),
        taken_at: at(i64::from(d) * 86_400),
        open_deals: 1,
        open_value: weighted * 2.0,
        weighted_value: weighted,
        weighted_by_owner: [("ana".to_owned(), weighted)].into(),
    };
    s.commit(Changes {
        forecasts: vec![
            snapshot("b2b", 3, 30.0),
            snapshot("b2b", 5, 50.0),
            snapshot("b2", 9, 9.0),
        ],
        ..Changes::default()
    })
    .unwrap();
    let found = |p: &str, d: u32| {
        s.forecast_on_or_before(p, day(d))
            .unwrap()
            .map(|x| x.weighted_value)
    };
    assert_eq!(found("b2b", 5), Some(50.0));
    assert_eq!(found("b2b", 4), Some(30.0));
    assert_eq!(found("b2b", 30), Some(50.0));
    assert_eq!(found("b2b", 2), None);
    // "b2" is a prefix of "b2b" but never reads its snapshots, nor the reverse.
    assert_eq!(found("b2", 8), None);
    assert_eq!(found("b2", 9), Some(9.0));
    assert_eq!(
        s.forecast_on_or_before("b2b", day(3)).unwrap(),
        Some(snapshot("b2b", 3, 30.0))
    );
}

fn scans_stay_in_their_prefix_whatever_the_cursor<B: Backend>(s: &KvStore<B>) {
    let prefix = b"~scan\0";
    let written = ["~a", "~scan\0x1", "~scan\0x2", "~scan\0x3", "~z"];
    let puts = written.map(|k| KvWrite::Put(k.as_bytes().to_vec(), vec![1]));
    s.backend.apply(puts.to_vec()).unwrap();
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        entries
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).replace("~scan\0", ""))
            .collect()
    };
    let back =
        |before: Option<&[u8]>, limit| keys(s.backend.scan_rev(prefix, before, limit).unwrap());
    let on = |after: Option<&[u8]>, limit| keys(s.backend.scan(prefix, after, limit).unwrap());
    assert_eq!(back(None, 10), ["x3", "x2", "x1"]);
    assert_eq!(back(Some(b"~scan\0x3"), 10), ["x2", "x1"]);
    // A cursor past the prefix starts at its end; one before it finds nothing.
    assert_eq!(back(Some(b"~zz"), 2), ["x3", "x2"]);
    assert!(back(Some(b"~a"), 10).is_empty());
    assert_eq!(on(Some(b"~a"), 10), ["x1", "x2", "x3"]);
    assert!(on(Some(b"~zz"), 10).is_empty());
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn appends_in_order_and_deduplicates() {
                let (_g, s) = $make;
                super::appends_in_order_and_deduplicates(&s);
            }
            #[test]
            fn commit_is_one_unit_with_cursor_and_chained_events() {
                let (_g, s) = $make;
                super::commit_is_one_unit_with_cursor_and_chained_events(&s);
            }
            #[test]
            fn fired_timer_events_follow_raised_ones_and_keep_their_ids() {
                let (_g, s) = $make;
                super::fired_timer_events_follow_raised_ones_and_keep_their_ids(&s);
            }
            #[test]
            fn records_read_as_last_written() {
                let (_g, s) = $make;
                super::records_read_as_last_written(&s);
            }
            #[test]
            fn records_page_by_kind() {
                let (_g, s) = $make;
                super::records_page_by_kind(&s);
            }
            #[test]
            fn tasks_filter_and_count_open_by_owner() {
                let (_g, s) = $make;
                super::tasks_filter_and_count_open_by_owner(&s);
            }
            #[test]
            fn events_read_from_any_point_in_order() {
                let (_g, s) = $make;
                super::events_read_from_any_point_in_order(&s);
            }
            #[test]
            fn runs_newest_first_with_filters() {
                let (_g, s) = $make;
                super::runs_newest_first_with_filters(&s);
            }
            #[test]
            fn timers_come_due_in_order_and_can_be_deleted() {
                let (_g, s) = $make;
                super::timers_come_due_in_order_and_can_be_deleted(&s);
            }
            #[test]
            fn score_ledger_pages_newest_first() {
                let (_g, s) = $make;
                super::score_ledger_pages_newest_first(&s);
            }
            #[test]
            fn history_enrollments_suppression() {
                let (_g, s) = $make;
                super::history_enrollments_suppression(&s);
            }
            #[test]
            fn outbox_rows_round_trip() {
                let (_g, s) = $make;
                super::outbox_rows_round_trip(&s);
            }
            #[test]
            fn texts_keep_their_number_and_receipts_apart() {
                let (_g, s) = $make;
                super::texts_keep_their_number_and_receipts_apart(&s);
            }
            #[test]
            fn ids_with_nul_never_read_as_another_records() {
                let (_g, s) = $make;
                super::ids_with_nul_never_read_as_another_records(&s);
            }
            #[test]
            fn scans_stay_in_their_prefix_whatever_the_cursor() {
                let (_g, s) = $make;
                super::scans_stay_in_their_prefix_whatever_the_cursor(&s);
            }
            #[test]
            fn forecast_snapshots_are_found_on_or_before_a_day() {
                let (_g, s) = $make;
                super::forecast_snapshots_are_found_on_or_before_a_day(&s);
            }
        }
    };
}

conformance!(
    memory,
    (
        (),
        KvStore::open(MemoryBackend::default(), "memory").unwrap()
    )
);
conformance!(fjall, {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(FjallBackend::open(dir.path(), 1 << 20).unwrap(), "test").unwrap();
    (dir, store)
});

#[tokio::test]
async fn fjall_keeps_flushed_state_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = KvStore::open(FjallBackend::open(dir.path(), 1 << 20).unwrap(), "t").unwrap();
        s.append_events(vec![event(Some("a"), "L1")]).unwrap();
        s.flush().await.unwrap();
    }
    let s = KvStore::open(FjallBackend::open(dir.path(), 1 << 20).unwrap(), "t").unwrap();
    assert_eq!(s.events_after(0, 10).unwrap().len(), 1);
    assert!(s.append_events(vec![event(Some("a"), "L1")]).unwrap()[0].duplicate);
}

#[tokio::test]
async fn a_store_whose_files_were_removed_is_refused_not_started_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = KvStore::open(FjallBackend::open(dir.path(), 1 << 20).unwrap(), "t").unwrap();
        s.append_events(vec![event(Some("a"), "L1")]).unwrap();
        s.flush().await.unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    let err = FjallBackend::open(dir.path(), 1 << 20).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("reads as empty"), "{err}");
}

#[test]
fn a_store_without_the_format_mark_is_refused() {
    let backend = MemoryBackend::default();
    backend
        .apply(vec![KvWrite::Put(b"foreign".to_vec(), b"data".to_vec())])
        .unwrap();
    let err = KvStore::open(backend, "/data").err().unwrap();
    assert!(err.to_string().contains("will not start over it"), "{err}");
}

#[test]
fn garbage_files_in_the_data_folder_are_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    let result = super::open_disk(dir.path(), 1 << 20).and_then(|b| KvStore::open(b, "t"));
    assert!(result.is_err(), "a corrupt store must not open as empty");
}

#[test]
fn an_unreleased_older_format_and_a_newer_one_are_refused_with_their_marks() {
    for mark in ["dealflow-5", "dealflow-9"] {
        let backend = MemoryBackend::default();
        backend
            .apply(vec![KvWrite::Put(
                keys::FORMAT.to_vec(),
                mark.as_bytes().to_vec(),
            )])
            .unwrap();
        let err = KvStore::open(backend, "/data").err().unwrap();
        assert!(matches!(err, StoreError::Format { .. }), "{err:?}");
        assert!(err.to_string().contains(mark), "{err}");
    }
}

#[test]
fn a_dealflow_6_store_gets_its_outbox_runs_and_tasks_indexed_and_its_webhook_bodies_read() {
    use crate::state::Delivery;
    let row = OutboxEntry::pending(
        "0000000000000007-intro".into(),
        key("lead", "L1"),
        Delivery::Webhook {
            url: "https://h.example".into(),
            method: "POST".into(),
            headers: Vec::new(),
            body: json!({"lead": {"score": 72}}).into(),
            secret: None,
        },
        at(0),
        "r".into(),
    );
    // As those formats stored it: the webhook's body a map, not JSON text.
    let stored_row = kv::encode_value(&serde_json::to_value(&row).unwrap()).unwrap();
    let stored_run = super::runs::encode(&[run("0001-0", "a", "L1")])
        .unwrap()
        .remove(0);
    let backend = MemoryBackend::default();
    backend
        .apply(vec![
            KvWrite::Put(keys::FORMAT.to_vec(), b"dealflow-6".to_vec()),
            KvWrite::Put(keys::outbox(&row.id), stored_row),
            KvWrite::Put(stored_run.key, stored_run.value),
            KvWrite::Put(
                keys::task("t1"),
                kv::encode_value(&task("t1", Some("ana"), TaskStatus::Completed)).unwrap(),
            ),
        ])
        .unwrap();
    let store = KvStore::open(backend, "memory").unwrap();
    let filter = OutboxFilter {
        status: None,
        record: Some(key("lead", "L1")),
    };
    assert_eq!(
        store.outbox_matching(&filter, None, 10).unwrap().items,
        [row]
    );
    let of_l1 = RunFilter {
        record: Some(key("lead", "L1")),
        ..RunFilter::default()
    };
    assert_eq!(store.runs(&of_l1, None, 10).unwrap().items.len(), 1);
    let anas = TaskFilter {
        owner: Some("ana".into()),
        ..TaskFilter::default()
    };
    assert_eq!(store.tasks(&anas, None, 10).unwrap().items.len(), 1);
    let backend = store.into_backend();
    assert_eq!(
        backend.get(keys::FORMAT).unwrap().as_deref(),
        Some(keys::FORMAT_VERSION)
    );
}
