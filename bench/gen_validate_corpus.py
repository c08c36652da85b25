#!/usr/bin/env python3
"""Writes a large valid workflow folder for the validate benchmark:
1,000 rules, 100 sequences and 100 templates spread over 100 files."""
import os
import sys

out = sys.argv[1]
os.makedirs(os.path.join(out, "templates"), exist_ok=True)
with open(os.path.join(out, "team.yaml"), "w") as f:
    f.write("team:\n  people:\n")
    for i in range(20):
        f.write(f"    - {{ email: rep{i}@acme.example, name: Rep {i}, timezone: America/New_York }}\n")
    f.write("  teams:\n    sdr: [" + ", ".join(f"rep{i}@acme.example" for i in range(10)) + "]\n")
    f.write("calendars:\n  us: { timezone: America/New_York, days: [mon, tue, wed, thu, fri], hours: \"09:00-17:00\" }\n")
    f.write("pipelines:\n  - name: b2b\n    for: lead\n    stages:\n")
    for s in ["new", "working", "qualified", "won"]:
        f.write(f"      - {{ name: {s}, require: [email], stall_after: 7d }}\n")
for t in range(100):
    with open(os.path.join(out, "templates", f"t{t}.md"), "w") as f:
        f.write(f"---\nsubject: \"Hello {{{{ lead.company | default('there') }}}} #{t}\"\n---\n")
        f.write("Hi {{ lead.first_name | default('there') }},\n\n" + "Some text about our product. " * 20 + "\n\n[Unsubscribe]({{ unsubscribe_url }})\n")
for fi in range(99):
    with open(os.path.join(out, f"flow{fi:03}.yaml"), "w") as f:
        seqs = [fi] if fi < 99 else []
        f.write("sequences:\n")
        for s in [fi] + ([99] if fi == 0 else []):
            f.write(f"  - name: seq{s}\n    for: lead\n    send_window: us\n    steps:\n")
            f.write(f"      - {{ id: a, email: {{ template: t{s} }} }}\n      - wait: 3d\n")
            f.write(f"      - {{ id: b, email: {{ template: t{(s + 1) % 100}, thread: a }} }}\n      - wait: 2d\n")
            f.write("      - { id: c, task: { title: \"Call {{ lead.email }}\", due: 1d } }\n")
        f.write("rules:\n")
        per_file = 1000 // 99 + (1 if fi < 1000 % 99 else 0)
        for r in range(per_file):
            n = fi * 100 + r
            f.write(f"  - name: rule{n}\n    for: lead\n    on: [form.submitted, page.viewed]\n")
            f.write(f"    if: lead.score is defined and lead.score >= {n % 90} and lead.country in ['US', 'CA']\n")
            f.write("    do:\n      - assign: { team: sdr, strategy: round_robin }\n")
            f.write(f"      - task: {{ title: \"Follow up {{{{ lead.email }}}} ({n})\", due: 1h }}\n")
            f.write(f"      - enroll: seq{(fi if r % 2 else (fi + 1) % 99)}\n")
            f.write(f"      - set: {{ touched_by: \"rule{n}\" }}\n")
