"""Grafana dashboards: valid JSON, unique uids, every panel queries a metric Mercato exports (or will).

Usage: dashboards.py <dashboards dir>
"""

import json
import os
import re
import sys

KNOWN = {
    # exported today
    "grpc_server_requests_total", "grpc_server_request_duration_seconds_bucket",
    "http_server_requests_total", "http_server_request_duration_seconds_bucket", "up",
    # future names the dashboards already use
    "mercato_outbox_depth", "mercato_dead_letters_total", "mercato_orders_total", "mercato_payments_total",
    # RabbitMQ's own exporter
    "rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages_unacked",
}
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
print(f"{len(files)} dashboards")
for p in problems:
    print("problem:", p)
sys.exit(1 if problems or not files else 0)
