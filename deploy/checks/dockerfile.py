"""What the image promises (hadolint checks style; this checks the contract).

Usage: dockerfile.py <Dockerfile> <.dockerignore>
"""

import re
import sys

text = open(sys.argv[1]).read()
ignore = open(sys.argv[2]).read().split()
problems = []
stages = re.split(r"^FROM ", text, flags=re.M)
final = stages[-1]


def need(cond, msg):
    if not cond:
        problems.append(msg)


need(len(stages) >= 3, "expected a multi-stage build")
need(re.search(r"^USER (65532|nonroot)", final, re.M), "final stage must run as a non-root USER")
need('HEALTHCHECK' in final and '["/usr/local/bin/mercato", "healthcheck"]' in final,
     'HEALTHCHECK must be CMD ["/usr/local/bin/mercato", "healthcheck"]')
need('ENTRYPOINT ["/usr/local/bin/mercato"]' in final, "ENTRYPOINT must be the binary")
for var in ("MERCATO_HTTP_ADDR=0.0.0.0:8080", "MERCATO_METRICS_ADDR=0.0.0.0:9090", "MERCATO_DATA_DIR=/var/lib/mercato"):
    need(var in final, f"final stage must set {var}")
need('VOLUME ["/var/lib/mercato"]' in final, "data directory must be a VOLUME")
for label in ("title", "version", "revision", "created", "source", "licenses"):
    need(f"org.opencontainers.image.{label}=" in final, f"OCI label org.opencontainers.image.{label} missing")
need(re.search(r"cargo build --release --locked -p mercato\n", text), "dependency layer (stub build) missing")
for entry in ("target", ".git"):
    need(entry in ignore, f".dockerignore must exclude {entry}")
for p in problems:
    print("problem:", p)
sys.exit(1 if problems else 0)
