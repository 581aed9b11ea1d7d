"""Grafana dashboards: valid JSON, unique uids, every panel queries a metric Mercato exports, and matches its
`status` label only on values the sources spell (a panel filtering on a value nobody emits stays empty, silently).

Usage: dashboards.py <dashboards dir>
"""

import json
import os
import re
import sys

# Every metric a panel queries must be one Mercato exports: the names given to the `metrics` macros in the
# Rust sources (histograms also as _bucket/_sum/_count), Prometheus' own `up`, and RabbitMQ's exporter.
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
EXTERNAL = {"up", "rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages_unacked"}


def exported_metrics():
    names = set()
    pattern = re.compile(r"\b(counter|gauge|histogram)!\(\s*\"([a-z_][a-z0-9_]*)\"")
    for top in ("crates", "services"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".rs"):
                    for kind, metric in pattern.findall(open(os.path.join(folder, name)).read()):
                        names.add(metric)
                        if kind == "histogram":
                            names.update(metric + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def string_literals():
    literals = set()
    for top in ("crates", "services"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".rs"):
                    literals.update(re.findall(r'"([^"\\]*)"', open(os.path.join(folder, name)).read()))
    return literals


KNOWN = exported_metrics() | EXTERNAL
SPELLED = string_literals()
FUNCS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "le", "label_values"}
directory = sys.argv[1]
problems, uids = [], set()
files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
for f in files:
    d = json.load(open(os.path.join(directory, f)))
    if d.get("uid") in uids or not d.get("uid"):
        problems.append(f"{f}: missing or duplicate uid")
    uids.add(d.get("uid"))
    if not d.get("panels"):
        problems.append(f"{f}: no panels")
    for p in d.get("panels", []):
        if not p.get("targets"):
            problems.append(f"{f}: panel {p.get('title')!r} has no query")
        for t in p.get("targets", []):
            names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[)", t["expr"]))
            for n in names - FUNCS:
                if n not in KNOWN:
                    problems.append(f"{f}: panel {p.get('title')!r} queries unknown metric {n}")
            # Exact matches on the status of Mercato's own counters (mercato_orders_total{status="CONFIRMED"}).
            for metric, value in re.findall(r'\b(mercato_[a-z0-9_]*)\{[^}]*\bstatus="([^"]*)"', t["expr"]):
                if value not in SPELLED:
                    problems.append(f"{f}: panel {p.get('title')!r} matches {metric} on status {value!r}, which no source spells")
print(f"{len(files)} dashboards")
for p in problems:
    print("problem:", p)
sys.exit(1 if problems or not files else 0)
