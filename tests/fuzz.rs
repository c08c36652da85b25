//! Fuzz targets for every parser that takes outside input (issue 24): event
//! JSON, workflow YAML with its expressions and templates (compiled, then
//! run on a virtual clock so the templates render), inbound email, source
//! verification and mapping, and the console's session cookie. cargo-fuzz
//! needs a nightly toolchain these machines cannot fetch, so the targets
//! are proptest properties on stable: "never panics, answers or refuses".
//!
//! CI runs a short pass. For a long one, by hand:
//! `FUZZ_CASES=100000 cargo test --release --test fuzz -- --nocapture`
//! (each target prints how many inputs it ran and for how long).

// The run time printed is wall time; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

use chrono::{DateTime, Utc};
use dealflow::config::Workflows;
use dealflow::simulation::TimedEvent;
use dealflow::state::{NewEvent, RecordKey};
use dealflow::store::{KvStore, MemoryBackend};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Inputs per target: `FUZZ_CASES`, else `ci`.
fn cases(ci: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ci)
}

/// Runs `property` on `cases` inputs of `strategy`; a panic or a failed
/// property fails the test with the (shrunk) input. Prints the count.
fn fuzz<S: Strategy>(target: &str, ci: u32, strategy: S, property: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let n = cases(ci);
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let outcome = runner.run(&strategy, |input| {
        property(input);
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("fuzz {target}: {e}");
    }
    eprintln!(
        "fuzz {target}: {n} inputs in {:.1} s, 0 panics",
        started.elapsed().as_secs_f64()
    );
}

fn now() -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

/// JSON shaped like events and payloads: their keys, nested a few deep.
fn json() -> impl Strategy<Value = Json> {
    let keys = prop::sample::select(vec![
        "type",
        "record",
        "kind",
        "id",
        "fields",
        "data",
        "owner",
        "stage",
        "occurred_at",
        "email",
        "amount",
        "items",
        "event",
        "payload",
    ]);
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        ".{0,16}".prop_map(Json::from),
        "[a-z]{1,6}/[A-Z0-9-]{0,6}".prop_map(Json::from),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z".prop_map(Json::from),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| Json::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

#[test]
fn event_json_is_parsed_or_refused() {
    fuzz("event JSON", 2_000, json(), |value| {
        let _ = dealflow::intake::event::parse_event(value, now());
    });
    fuzz(
        "event bytes",
        2_000,
        prop::collection::vec(any::<u8>(), 0..256),
        |bytes| {
            if let Ok(value) = serde_json::from_slice::<Json>(&bytes) {
                let _ = dealflow::intake::event::parse_event(value, now());
            }
        },
    );
}

/// Expressions from the language's pieces and anything else.
fn expression() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "lead.email",
            "lead.score",
            "deal.amount",
            "event.data.x",
            "record.owner",
            "now",
            "and",
            "or",
            "not",
            "in",
            "is defined",
            "is none",
            "==",
            "!=",
            ">",
            "<=",
            "+",
            "-",
            "*",
            "/",
            "%",
            "~",
            "(",
            ")",
            "[",
            "]",
            ".",
            ",",
            "|",
            "lower",
            "upper",
            "default(0)",
            "length",
            "'text'",
            "\"q\"",
            "0",
            "1.5",
            "-3",
            "true",
            "none",
            "{",
            "}",
            ":",
        ])
        .prop_map(str::to_owned),
        ".{0,4}",
    ];
    prop::collection::vec(token, 0..10).prop_map(|t| t.join(" "))
}

/// Templates: text, `{{ expression }}` and `{% %}` blocks, and debris.
fn template() -> impl Strategy<Value = String> {
    let debris = prop::sample::select(vec![
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        "{{ unsubscribe_url }}",
    ]);
    let piece = prop_oneof![
        4 => "[ -~&&[^{}%#]]{0,8}",
        4 => sound_expression().prop_map(|e| format!("{{{{ {e} }}}}")),
        2 => sound_expression().prop_map(|e| format!("{{% if {e} %}}y{{% else %}}n{{% endif %}}")),
        1 => sound_expression().prop_map(|e| format!("{{% for x in {e} %}}{{{{ x }}}}{{% endfor %}}")),
        1 => "[ -~]{0,8}",
        1 => expression().prop_map(|e| format!("{{{{ {e} }}}}")),
        1 => expression().prop_map(|e| format!("{{% if {e} %}}x{{% endif %}}")),
        1 => debris.prop_map(str::to_owned),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

/// Expressions that are well formed, so fuzzed workflows get past the
/// compiler and their conditions run on odd values: `a OP b`, filtered.
fn sound_expression() -> impl Strategy<Value = String> {
    let operand = prop::sample::select(vec![
        "lead.email",
        "lead.score",
        "lead.amount",
        "lead.x",
        "event.data.x",
        "now",
        "0",
        "1.5",
        "'a'",
        "none",
        "true",
        "lead.note | default('')",
        "lead.x | length",
        "lead.email | lower",
        "(lead.score or 0)",
    ]);
    let op = prop::sample::select(vec![
        "==", "!=", ">", "<", ">=", "+", "-", "*", "/", "%", "~", "and", "or", "in",
    ]);
    (operand.clone(), op, operand).prop_map(|(a, op, b)| format!("{a} {op} {b}"))
}

/// A record's fields, some of them the ones the workflow reads.
fn fields() -> impl Strategy<Value = Json> {
    prop::collection::btree_map(
        prop::sample::select(vec!["email", "score", "amount", "x", "note"]),
        json(),
        0..4,
    )
    .prop_map(|m| Json::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// YAML text in a double-quoted scalar.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A workflow folder's one file, with fuzzed expressions and templates in
/// the places users write them.
fn workflow(condition: &str, subject: &str, body: &str, value: &str) -> String {
    format!(
        r#"
settings:
  email: {{ transport: "maildir:/nonexistent", from: "a@acme.example" }}
team:
  people: [ {{ email: ana@acme.example }} ]
pipelines:
  - name: sales
    for: lead
    stages:
      - {{ name: new }}
      - name: won
        outcome: won
        require:
          - check: {condition}
sequences:
  - name: hello
    for: lead
    steps:
      - {{ id: intro, email: {{ subject: {subject}, body: {body} }} }}
rules:
  - name: fuzzed
    for: lead
    on: form.submitted
    if: {condition}
    do:
      - set: {{ note: {value} }}
      - enroll: hello
      - task: {{ title: {subject}, owner: ana@acme.example }}
"#,
        condition = quoted(condition),
        subject = quoted(subject),
        body = quoted(body),
        value = quoted(value),
    )
}

/// Compiles `yaml`; when it compiles, runs two events through it for a day
/// of virtual time so conditions are evaluated and templates rendered.
fn load_and_run(yaml: &str, fields: Json) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap();
    let (workflows, _) = dealflow::config::load(dir.path(), &HashMap::<String, String>::new());
    if let Some(workflows) = workflows {
        RAN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run(&workflows, fields);
    }
}

/// Fuzzed workflows that compiled and ran (the rest were refused).
static RAN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn run(workflows: &Workflows, fields: Json) {
    let event = |kind: &str| TimedEvent {
        at: now(),
        event: NewEvent {
            id: None,
            event_type: kind.into(),
            record: RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            fields: fields.as_object().cloned().unwrap_or_default(),
            data: Default::default(),
            occurred_at: now(),
            depth: 0,
        },
    };
    let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
    let until = now() + chrono::Duration::days(1);
    let ran = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())
        .map(|runtime| {
            runtime.block_on(dealflow::simulation::run_on(
                &store,
                workflows,
                now(),
                vec![event("form.submitted"), event("lead.updated")],
                until,
            ))
        });
    assert!(ran.is_ok(), "a run over the memory store failed: {ran:?}");
}

#[test]
fn workflow_expressions_and_templates_compile_or_are_refused_and_run() {
    fuzz(
        "expressions",
        200,
        (prop_oneof![sound_expression(), expression()], fields()),
        |(condition, fields)| load_and_run(&workflow(&condition, "Hi", "Hello", "x"), fields),
    );
    fuzz(
        "templates",
        200,
        (template(), template(), template(), fields()),
        |(subject, body, value, fields)| {
            load_and_run(&workflow("true", &subject, &body, &value), fields)
        },
    );
    let ran = RAN.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("fuzz expressions and templates: {ran} of the workflows compiled and ran a day");
    assert!(
        ran > 0,
        "no fuzzed workflow ever compiled: the targets test only the refusals"
    );
}

#[test]
fn workflow_yaml_text_is_compiled_or_refused() {
    // Whole files from the language's own words, indented at random.
    let line = (
        0usize..4,
        prop::sample::select(vec![
            "rules:",
            "- name: r",
            "for: lead",
            "on: form.submitted",
            "do:",
            "- email:",
            "subject: x",
            "body: \"{{ lead.email }}\"",
            "sequences:",
            "steps:",
            "- wait: 2d",
            "pipelines:",
            "stages:",
            "- { name: a }",
            "settings:",
            "email:",
            "team:",
            "people: [ { email: a@b.example } ]",
            "scoring:",
            "sources:",
            "tests:",
            "calendars:",
            "if: \"lead.x >\"",
            "- set: { a: 1 }",
            "[",
            "{",
            ": :",
            "&a",
            "*a",
            "!!binary x",
            "\t",
            "- ",
            "'",
            "\"",
        ]),
    )
        .prop_map(|(indent, text)| format!("{}{text}", "  ".repeat(indent)));
    fuzz(
        "workflow YAML",
        300,
        prop::collection::vec(line, 0..20),
        |lines| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("flows.yaml"), lines.join("\n")).unwrap();
            let _ = dealflow::config::load(dir.path(), &HashMap::<String, String>::new());
        },
    );
}

#[test]
fn inbound_email_is_read_or_refused() {
    let header = prop_oneof![
        "From: [ -~]{0,20}",
        "To: [ -~]{0,20}",
        "Subject: [ -~]{0,30}",
        "In-Reply-To: <[ -~]{0,20}>",
        "References: <[0-9a-z.-]{0,20}@[a-z.]{0,10}>",
        "Content-Type: (multipart/(report|mixed|alternative); boundary=\"b\"|text/plain; charset=[a-z0-9-]{0,8}|message/delivery-status)",
        "Auto-Submitted: auto-(replied|generated)",
        "Content-Transfer-Encoding: (base64|quoted-printable|7bit)",
        "X-Failed-Recipients: [ -~]{0,20}",
    ];
    let body = prop_oneof![
        ".{0,80}",
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; [a-z@.]{0,12}\r\nStatus: [245]\\.[0-9]\\.[0-9]\r\n--b--",
        "> quoted\r\n[ -~]{0,20}\r\nOn [ -~]{0,10} wrote:\r\n> more",
    ];
    fuzz(
        "inbound email",
        2_000,
        (
            prop::collection::vec(header, 0..6),
            body,
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        |(headers, body, noise)| {
            let mut raw = headers.join("\r\n").into_bytes();
            raw.extend_from_slice(b"\r\n\r\n");
            raw.extend_from_slice(body.as_bytes());
            raw.extend_from_slice(&noise);
            let _ = dealflow::delivery::inbound::classify(&raw);
            let _ = dealflow::delivery::inbound::snippet(&raw);
            let _ = dealflow::delivery::inbound::message_id(&raw);
        },
    );
}

#[test]
fn source_deliveries_are_verified_and_mapped_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sources.yaml"),
        r#"
sources:
  - name: forms
    verify: { scheme: hmac, header: X-Signature, prefix: "sha256=", secret: "s3cret" }
    events:
      - type: form.submitted
        for_each: "payload.items"
        if: "item.email is defined"
        id: "{{ item.id }}"
        record: { kind: lead, id: "{{ item.email | lower }}" }
        fields: { email: "{{ item.email }}", amount: "{{ item.amount }}" }
"#,
    )
    .unwrap();
    let (workflows, d) = dealflow::config::load(dir.path(), &HashMap::<String, String>::new());
    let workflows = workflows.unwrap_or_else(|| panic!("{d:?}"));
    let source = &workflows.sources["forms"];
    let headers = prop::collection::btree_map(
        prop::sample::select(vec!["x-signature", "content-type", "webhook-id", "x-other"]),
        prop_oneof!["sha256=[0-9a-f]{0,64}", "[ -~]{0,20}"],
        0..4,
    );
    fuzz(
        "source deliveries",
        2_000,
        (headers, json(), prop::collection::vec(any::<u8>(), 0..32)),
        |(headers, payload, noise)| {
            let headers: BTreeMap<String, String> = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let mut body = serde_json::to_vec(&payload).unwrap();
            if noise.len() % 3 == 0 {
                body.extend_from_slice(&noise);
            }
            let delivery = dealflow::intake::verify::Delivery {
                body: &body,
                headers: &headers,
                query_token: None,
            };
            let verified = dealflow::intake::verify::verify(&source.verify, &delivery, now());
            // Mapping runs whatever verification said: a replay maps kept
            // payloads again without their signature.
            let _ = dealflow::intake::mapping::map(
                &workflows,
                source,
                &body,
                &headers,
                &verified.unwrap_or_default(),
                now(),
            );
        },
    );
}

#[test]
fn texts_posted_back_are_verified_and_read_or_refused() {
    use dealflow::config::model::SmsProvider;
    use dealflow::config::workflows::{SigningSecret, SmsSettings};
    let settings = |provider| SmsSettings {
        provider,
        url: "http://127.0.0.1:1".into(),
        account: "AC1".into(),
        token: SigningSecret("t0ken".into()),
        from: "+15550001111".into(),
        quiet_hours: None,
    };
    let field = prop::sample::select(vec![
        "MessageSid",
        "From",
        "To",
        "Body",
        "MessageStatus",
        "ErrorCode",
        "id",
        "type",
    ]);
    let form = prop::collection::vec((field, "[ -~\\PC]{0,12}"), 0..6);
    fuzz(
        "sms hook",
        2_000,
        (
            form,
            json(),
            prop::collection::vec(any::<u8>(), 0..32),
            any::<bool>(),
        ),
        |(form, payload, noise, twilio)| {
            let mut body = if twilio {
                let mut s = form_urlencoded::Serializer::new(String::new());
                for (k, v) in &form {
                    s.append_pair(k, v);
                }
                s.finish().into_bytes()
            } else {
                serde_json::to_vec(&payload).unwrap()
            };
            if noise.len() % 3 == 0 {
                body.extend_from_slice(&noise);
            }
            let provider = if twilio {
                SmsProvider::Twilio
            } else {
                SmsProvider::Http
            };
            let mut headers = BTreeMap::new();
            headers.insert("x-twilio-signature".to_owned(), "c2ln".to_owned());
            let url = "https://flows.example/hooks/sms?row=1";
            let _ = dealflow::intake::sms::verify(&settings(provider), url, &body, &headers, now());
            if let Ok(dealflow::intake::sms::Inbound::Message { id, from, body, .. }) =
                dealflow::intake::sms::read(provider, &body, Some("1"), now())
            {
                let _ = dealflow::intake::sms::handle_message(&id, &from, &body, None, now());
            }
            let _ = dealflow::state::phone::segments(&String::from_utf8_lossy(&body));
        },
    );
}

#[test]
fn console_cookies_are_checked_or_refused() {
    let keys = dealflow::console::SessionKeys::new(Some("token"), false);
    let (good, _) = keys.issue(true, now());
    let cookie = prop_oneof![
        "[ -~]{0,80}",
        "dealflow_session=[ -~]{0,80}",
        "dealflow_session=[ug]\\.-?[0-9]{0,12}\\.[0-9a-f]{0,32}\\.[0-9a-f]{0,64}",
        (0usize..200)
            .prop_map(move |cut| format!("dealflow_session={}", &good[..cut.min(good.len())])),
    ];
    fuzz("console cookies", 2_000, cookie, |value| {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(axum::http::header::COOKIE, v);
        }
        if let Some(session) = keys.check(&headers, now()) {
            // Only the whole signed cookie opens a session.
            assert!(value.len() >= 100, "{value}");
            assert!(keys.csrf_matches(&session, &keys.csrf(&session)));
        }
    });
}
