//! The console (SPEC §8) against the real daemon: sign-in, sessions and
//! CSRF over plain HTTP, error pages and escaping, live updates over
//! server-sent events, the outbox decisions; and the pages in a real
//! headless Chromium, with a screenshot of each under
//! `target/console-screenshots/`.

mod common;

use common::browser::Browser;
use common::sinks::SmtpSink;
use common::{Daemon, eventually, get_json, post_json, workflow_dir};
use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

const TOKEN: &str = "console-test-token";

fn flows(smtp: &str) -> String {
    format!(
        r#"
settings:
  public_url: http://127.0.0.1:9
  email:
    transport: {smtp}
    from: "Acme Sales <sales@acme.example>"
    postal_address: "Acme Inc, 1 Main St, Springfield"
  retry: {{ first: 1s, max_delay: 1s, attempts: 2 }}
team:
  people:
    - {{ email: ana@acme.example, name: Ana Ruiz }}
    - {{ email: ben@acme.example, name: Ben Ode }}
pipelines:
  - name: sales
    for: deal
    value: amount
    stages:
      - {{ name: new, probability: 0.1 }}
      - {{ name: qualified, require: [budget], probability: 0.3 }}
      - {{ name: proposal, probability: 0.6 }}
      - {{ name: won, outcome: won }}
      - {{ name: lost, outcome: lost, require: [lost_reason] }}
sequences:
  - name: hello
    for: lead
    steps:
      - {{ id: intro, email: {{ subject: "Hello {{{{ lead.name }}}}", body: "Hi {{{{ lead.name }}}}, [stop]({{{{ unsubscribe_url }}}})" }} }}
sources:
  - name: forms
    verify: none
    events:
      - type: form.submitted
        record: {{ kind: lead, id: "{{{{ payload.email }}}}" }}
rules:
  - name: call new deals
    for: deal
    on: deal.opened
    do:
      - task: {{ title: "Call {{{{ deal.name }}}}", owner: "{{{{ deal.owner }}}}" }}
  - name: greet
    for: lead
    on: signed.up
    do:
      - enroll: hello
"#
    )
}

/// The daemon on these tests' workflows, in a folder of its own.
fn start(smtp: &SmtpSink, env: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf, Daemon) {
    let (dir, flows) = workflow_dir(&flows(&smtp.url()));
    let daemon = Daemon::start(&flows, &dir.path().join("data"), &[], env);
    (dir, flows, daemon)
}

/// Six deals worth 1,000 to 6,000: three with a budget moved to qualified,
/// one of them on to proposal. Now: new 3 (4,000 + 5,000 + 6,000),
/// qualified 2 (2,000 + 3,000), proposal 1 (1,000); entered: 6, 3, 1.
/// Weighted: 15,000 × 0.1 + 5,000 × 0.3 + 1,000 × 0.6 = 3,600.
async fn seed(url: &str) {
    for i in 1..=6 {
        let owner = if i % 2 == 0 {
            "ben@acme.example"
        } else {
            "ana@acme.example"
        };
        let mut fields = json!({ "name": format!("Deal {i}"), "owner": owner, "amount": i * 1000 });
        if i <= 3 {
            fields["budget"] = json!("50k");
        }
        let event = json!({ "type": "deal.opened", "record": { "kind": "deal", "id": format!("D{i}"), "fields": fields } });
        assert_eq!(
            post_as(url, "/v1/events", event).await,
            StatusCode::ACCEPTED
        );
    }
    eventually(20, "six deals", || async {
        let tasks = get_authorized(url, "/v1/tasks").await;
        (tasks["tasks"].as_array().map_or(0, Vec::len) == 6).then_some(())
    })
    .await;
    for (deal, to) in [
        ("D1", "qualified"),
        ("D2", "qualified"),
        ("D3", "qualified"),
        ("D1", "proposal"),
    ] {
        let status = post_as(
            url,
            &format!("/v1/records/deal/{deal}/stage"),
            json!({ "to": to }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{deal} to {to}");
    }
}

async fn post_as(url: &str, path: &str, body: serde_json::Value) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn get_authorized(url: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Form posts (reqwest's own `form` needs a feature the daemon does not).
trait FormPost {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormPost for reqwest::RequestBuilder {
    fn form_pairs(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session cookie a response sets (`name=value`), and its whole header.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("dealflow_session="))
        .expect("a session cookie")
        .to_owned();
    (header.split(';').next().unwrap().to_owned(), header)
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Posts the sign-in form with a session cookie.
async fn post_sign_in(url: &str, cookie: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
    no_redirects()
        .post(format!("{url}/signin"))
        .header(COOKIE, cookie)
        .form_pairs(pairs)
        .send()
        .await
        .unwrap()
}

/// Signs in over plain HTTP; answers the signed-in cookie.
async fn sign_in(url: &str) -> String {
    let form = no_redirects()
        .get(format!("{url}/signin"))
        .send()
        .await
        .unwrap();
    let (guest, _) = session_cookie(&form);
    let csrf = csrf_of(&form.text().await.unwrap());
    let signed = post_sign_in(
        url,
        &guest,
        &[
            ("csrf", csrf.as_str()),
            ("token", TOKEN),
            ("next", "/tasks"),
        ],
    )
    .await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed.headers()[LOCATION], "/tasks");
    session_cookie(&signed).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sessions_csrf_errors_and_escaping_over_http() {
    let smtp = SmtpSink::start();
    let (dir, flows, daemon) = start(&smtp, &[("DEALFLOW_TOKEN", TOKEN)]);
    let url = daemon.url.clone();
    let http = no_redirects();

    // Signed out, a page sends to the sign-in form and a form post is refused.
    let page = http
        .get(format!("{url}/tasks?owner=ana@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()[LOCATION],
        "/signin?next=%2Ftasks%3Fowner%3Dana%40acme.example"
    );
    let post = http
        .post(format!("{url}/tasks/x/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);

    // A wrong token is a 401 page; the session cookie is HttpOnly and strict.
    let form = http.get(format!("{url}/signin")).send().await.unwrap();
    let (guest, header) = session_cookie(&form);
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    assert!(!header.contains("Secure"), "plain http: {header}");
    let csrf = csrf_of(&form.text().await.unwrap());
    let wrong = post_sign_in(
        &url,
        &guest,
        &[("csrf", csrf.as_str()), ("token", "guess"), ("next", "/")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let without_csrf = post_sign_in(&url, &guest, &[("token", TOKEN)]).await;
    assert_eq!(without_csrf.status(), StatusCode::FORBIDDEN);
    // A sign-in never redirects off the site.
    let elsewhere = post_sign_in(
        &url,
        &guest,
        &[
            ("csrf", csrf.as_str()),
            ("token", TOKEN),
            ("next", "//evil.example/"),
        ],
    )
    .await;
    assert_eq!(elsewhere.headers()[LOCATION], "/");

    let cookie = sign_in(&url).await;
    seed(&url).await;
    let hostile = json!({ "type": "deal.opened", "record": { "kind": "deal", "id": "<script>alert(1)</script>", "fields": { "name": "<img src=x onerror=alert(2)>", "owner": "ana@acme.example" } } });
    assert_eq!(
        post_as(&url, "/v1/events", hostile).await,
        StatusCode::ACCEPTED
    );
    let get = |path: &str| {
        http.get(format!("{url}{path}"))
            .header(COOKIE, &cookie)
            .send()
    };
    let record = eventually(10, "the hostile record's page", || async {
        let r = get("/records/deal/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            .await
            .unwrap();
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    let html = record.text().await.unwrap();
    assert!(
        !html.contains("<script>alert(1)") && !html.contains("<img src=x"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    let tasks = get("/tasks").await.unwrap().text().await.unwrap();
    assert!(
        tasks.contains("Call &lt;img src=x onerror=alert(2)&gt;"),
        "{tasks}"
    );

    // Errors are pages: unknown record and pipeline 404, bad query 400.
    for (path, status, says) in [
        ("/records/deal/nobody", 404, "no record deal/nobody"),
        ("/?pipeline=nope", 404, "no pipeline nope"),
        ("/stages/sales/nowhere", 404, "no stage nowhere"),
        ("/?since=soon", 400, "since: invalid duration"),
        ("/tasks?colour=red", 400, "unknown field"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        // Pages escape `/` too (as OWASP advises for text in HTML).
        let body = r.text().await.unwrap().replace("&#x2f;", "/");
        assert!(body.contains(says), "{path}: {body}");
    }

    // A gated move from the record's page: refused with every unmet
    // requirement (nothing changes), then allowed.
    let page = get("/records/deal/D4").await.unwrap().text().await.unwrap();
    let csrf = csrf_of(&page);
    let post_form = |path: &'static str, pairs: Vec<(&'static str, String)>| {
        let (url, cookie) = (url.clone(), cookie.clone());
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            no_redirects()
                .post(format!("{url}{path}"))
                .header(COOKIE, cookie)
                .form_pairs(&pairs)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = post_form(
        "/records/deal/D4/stage",
        vec![("csrf", csrf.clone()), ("to", "qualified".into())],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("budget"));
    let record = get_authorized(&url, "/v1/records/deal/D4").await;
    assert_eq!(record["record"]["stage"], "new");
    let moved = post_form(
        "/records/deal/D2/stage",
        vec![("csrf", csrf.clone()), ("to", "proposal".into())],
    )
    .await;
    assert_eq!(moved.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        moved.headers()[LOCATION],
        "/records/deal/D2?notice=moved+to+proposal"
    );
    let record = get_authorized(&url, "/v1/records/deal/D2").await;
    assert_eq!(record["record"]["stage"], "proposal");
    // Reload now, from the workflows page.
    let reloaded = post_form("/workflows/reload", vec![("csrf", csrf.clone())]).await;
    assert_eq!(reloaded.status(), StatusCode::SEE_OTHER);
    let notice = reloaded.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        notice.starts_with("/workflows?notice=nothing+changed"),
        "{notice}"
    );

    // A form post with another session's token, or none, changes nothing.
    let task_id = get_authorized(&url, "/v1/tasks").await["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in ["", "00"] {
        let r = http
            .post(format!("{url}/tasks/{task_id}/complete"))
            .header(COOKIE, &cookie)
            .form_pairs(&[("csrf", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let open = get_authorized(&url, "/v1/tasks").await;
    assert!(
        open["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == task_id.as_str())
    );

    // The forecast in the pipeline report, after D2's move to proposal:
    // 15,000 × 0.1 (D4-D6 and the hostile deal, worth 0) + 3,000 × 0.3
    // + (1,000 + 2,000) × 0.6.
    let report = get_authorized(&url, "/v1/reports/pipeline").await;
    assert_eq!(report[0]["forecast"]["weighted_value"], 4200.0, "{report}");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_dealflow"))
        .args(["report", "forecast", "--url", &url])
        .env("DEALFLOW_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        text.contains("Pipeline sales: forecasts against what was won since"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("90 ")),
        "{text}"
    );

    // The API keeps its JSON answers and its own token.
    let api = http
        .get(format!("{url}/v1/status"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    // Signing out ends the session... and the old cookie is refused once the token changes.
    let page = get("/").await.unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    let out = http
        .post(format!("{url}/signout"))
        .header(COOKIE, &cookie)
        .form_pairs(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&out).1.contains("Max-Age=0"));
    drop(daemon);
    let restarted = Daemon::start(
        &flows,
        &dir.path().join("data"),
        &[],
        &[("DEALFLOW_TOKEN", "another")],
    );
    let r = http
        .get(format!("{}/", restarted.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "a session of the old token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_pages_hear_of_commits_and_dead_sends_can_be_retried_or_cancelled() {
    let smtp = SmtpSink::start();
    let (_dir, _flows, daemon) = start(&smtp, &[]);
    let url = daemon.url.clone();

    // Open (no token, loopback): a guest session is made on the spot.
    let first = no_redirects().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (cookie, _) = session_cookie(&first);
    let mut live = reqwest::Client::new()
        .get(format!("{url}/live"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let event = json!({ "type": "signed.up", "record": { "kind": "lead", "id": "L1", "fields": { "email": "flaky@p.example", "name": "Fay" } } });
    assert_eq!(post_json(&format!("{url}/v1/events"), event).await.0, 202);
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(chunk) = live.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: changed") {
                return seen;
            }
        }
        seen
    })
    .await
    .expect("a changed event within 10 s");
    assert!(heard.contains("event: changed"), "{heard}");

    // flaky@ is refused for a while (451, twice): with two tries allowed
    // the send dies; a person's retry then gets it through.
    let dead = eventually(20, "the dead send", || async {
        let rows = get_json(&format!("{url}/v1/outbox?status=dead")).await;
        rows["outbox"]
            .as_array()
            .filter(|r| !r.is_empty())
            .map(|r| r[0].clone())
    })
    .await;
    let id = dead["id"].as_str().unwrap().to_owned();
    let page = |path: &'static str| {
        let (url, cookie) = (url.clone(), cookie.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{url}{path}"))
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let outbox_page = page("/outbox").await;
    assert!(
        outbox_page.contains("Hello Fay") && outbox_page.contains("451"),
        "{outbox_page}"
    );
    let csrf = csrf_of(&outbox_page);
    let retried = no_redirects()
        .post(format!("{url}/outbox/{id}/retry"))
        .header(COOKIE, &cookie)
        .form_pairs(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    eventually(20, "the retried send delivered", || async {
        (!smtp.to("flaky@p.example").is_empty()).then_some(())
    })
    .await;
    // Recorded once the server's answer is back, a moment after it has the
    // message.
    eventually(20, "the retried send recorded as sent", || async {
        let row = get_json(&format!("{url}/v1/outbox?record=lead/L1")).await["outbox"][0].clone();
        (row["status"] == "sent").then_some(())
    })
    .await;

    // A second dead send, cancelled over the API; then it cannot be retried.
    let event = json!({ "type": "signed.up", "record": { "kind": "lead", "id": "L2", "fields": { "email": "flaky@q.example", "name": "Quin" } } });
    assert_eq!(post_json(&format!("{url}/v1/events"), event).await.0, 202);
    let id = eventually(20, "the second dead send", || async {
        let rows = get_json(&format!("{url}/v1/outbox?status=dead")).await;
        rows["outbox"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["id"].as_str())
            .map(str::to_owned)
    })
    .await;
    let (status, body) = post_json(&format!("{url}/v1/outbox/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, body) = post_json(&format!("{url}/v1/outbox/{id}/retry"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = post_json(&format!("{url}/v1/outbox/{id}/resend"), json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = post_json(&format!("{url}/v1/outbox/nothing/cancel"), json!({})).await;
    assert_eq!(status, 404);
    assert!(smtp.to("flaky@q.example").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let smtp = SmtpSink::start();
    let (_dir, flows, daemon) = start(&smtp, &[("DEALFLOW_TOKEN", TOKEN)]);
    let url = daemon.url.clone();
    seed(&url).await;
    let browser = Browser::start().await;
    let c = &browser.client;

    // Sign in: the pipeline asks for the token first.
    c.goto(&format!("{url}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/signin"));
    browser.screenshot("signin").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    browser.click(Locator::Css("form.signin button")).await;

    // The funnel shows the seeded counts.
    let text = browser
        .text_until(10, "the pipeline", |t| t.contains("Pipeline sales"))
        .await;
    assert!(text.contains("Funnel"), "{text}");
    let count = |stage: &'static str, column: &'static str| {
        browser.text_of(format!("tr[data-stage='{stage}'] td.{column}"))
    };
    assert_eq!(count("new", "entered").await, "6");
    assert_eq!(count("qualified", "entered").await, "3");
    assert_eq!(count("proposal", "entered").await, "1");
    assert_eq!(count("new", "now-in").await, "3");
    assert_eq!(count("qualified", "now-in").await, "2");
    assert_eq!(browser.text_of("#weighted-value".into()).await, "3,600");
    assert_eq!(browser.text_of("#open-value".into()).await, "21,000");
    browser.screenshot("pipeline").await;

    // A move made over the API appears live, without reloading the page.
    c.wait()
        .for_element(Locator::Css("html[data-live-ready]"))
        .await
        .unwrap();
    assert_eq!(
        post_as(
            &url,
            "/v1/records/deal/D2/stage",
            json!({ "to": "proposal" })
        )
        .await,
        StatusCode::OK
    );
    for _ in 0..100 {
        if count("proposal", "now-in").await == "2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        count("proposal", "now-in").await,
        "2",
        "the page was not updated live"
    );
    assert_eq!(count("qualified", "now-in").await, "1");

    // A stage's records, and a record's page.
    browser.click(Locator::LinkText("qualified")).await;
    browser
        .text_until(10, "the stage list", |t| t.contains("deal/D3"))
        .await;
    browser.screenshot("stage").await;
    browser.click(Locator::LinkText("deal/D3")).await;
    let record = browser
        .text_until(10, "the record", |t| t.contains("Stage history"))
        .await;
    assert!(
        record.contains("Call Deal 3") || record.contains("Open tasks"),
        "{record}"
    );
    browser.screenshot("record").await;

    // Complete a task from the queue.
    c.goto(&format!("{url}/tasks?owner=ana@acme.example"))
        .await
        .unwrap();
    browser
        .text_until(10, "ana's tasks", |t| t.contains("Call Deal 1"))
        .await;
    browser.screenshot("tasks").await;
    browser
        .click(Locator::Css("button[aria-label='Complete Call Deal 1']"))
        .await;
    let after = browser
        .text_until(10, "the completed task gone", |t| t.contains("completed"))
        .await;
    assert!(!after.contains("Call Deal 1"), "{after}");
    let tasks = get_authorized(&url, "/v1/tasks?status=completed").await;
    assert_eq!(tasks["tasks"][0]["title"], "Call Deal 1");

    // A POST without the CSRF token is refused, from inside the signed-in page.
    let status = c
        .execute_async(
            "const done = arguments[0]; fetch('/workflows/reload', { method: 'POST', body: new URLSearchParams({}) }).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));

    // A payload the source cannot map is kept, shown, and replayed from
    // the page (it still cannot be mapped: the page says why).
    let kept = reqwest::Client::new()
        .post(format!("{url}/hooks/forms"))
        .header("content-type", "application/json")
        .body(r#"{"name": "no email"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::ACCEPTED);
    assert!(kept.text().await.unwrap().contains("\"kept\""));
    c.goto(&format!("{url}/sources")).await.unwrap();
    browser
        .text_until(10, "the kept payload", |t| t.contains("1 payload(s) kept"))
        .await;
    browser.screenshot("sources").await;
    browser
        .click(Locator::Css("form[action*='/replay'] button"))
        .await;
    browser
        .text_until(10, "the replay's answer", |t| {
            t.contains("still cannot be mapped")
        })
        .await;

    // The other pages render.
    for (path, name, says) in [
        ("/sequences", "sequences", "Sequences"),
        ("/outbox", "outbox", "Dead"),
    ] {
        c.goto(&format!("{url}{path}")).await.unwrap();
        browser.text_until(10, name, |t| t.contains(says)).await;
        browser.screenshot(name).await;
    }

    // A broken workflow file shows its error with file:line:col, and the console keeps working.
    std::fs::write(
        flows.join("broken.yaml"),
        "rules:\n  - name: x\n    on: [\n",
    )
    .unwrap();
    eventually(20, "the reload error", || async {
        let status = get_authorized(&url, "/v1/status").await;
        (!status["last_reload_error"].is_null()).then_some(())
    })
    .await;
    c.goto(&format!("{url}/workflows")).await.unwrap();
    let page = browser
        .text_until(10, "the reload error", |t| {
            t.contains("The last reload was refused")
        })
        .await;
    assert!(page.contains("broken.yaml:3:"), "{page}");
    browser.screenshot("workflows").await;
    c.goto(&format!("{url}/")).await.unwrap();
    browser
        .text_until(10, "the pipeline while a reload fails", |t| {
            t.contains("Pipeline sales")
        })
        .await;
    browser.close().await;
}
