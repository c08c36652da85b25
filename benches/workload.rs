//! The benchmark workload shared by the ingest and engine benchmarks:
//! 100 rules on leads, of which ten match `bench.event`. With
//! BENCH_IDLE_RULES=1 none matches, to separate ingest cost from engine cost.

pub fn write_workflows(dir: &std::path::Path) {
    let mut yaml = String::from(
        "team:\n  people:\n    - { email: ana@x.example }\n    - { email: ben@x.example }\n  teams:\n    sdr: [ana@x.example, ben@x.example]\nrules:\n",
    );
    let idle = std::env::var("BENCH_IDLE_RULES").is_ok_and(|v| v == "1");
    let matching = if idle { "other.event" } else { "bench.event" };
    for i in 0..100 {
        // Realistic mix: most rules do not match a given event type.
        let on = if i % 10 == 0 { matching } else { "other.event" };
        yaml.push_str(&format!(
            "  - name: rule{i}\n    for: lead\n    on: {on}\n    if: lead.score is not defined or lead.score >= {}\n    do:\n      - set: {{ seen_rule{i}: true }}\n",
            i % 50
        ));
    }
    yaml.push_str(&format!("  - name: route\n    for: lead\n    on: {matching}\n    if: lead.owner is not defined\n    do:\n      - assign: {{ team: sdr }}\n"));
    std::fs::write(dir.join("flows.yaml"), yaml).unwrap();
}
