"""Validates rendered manifests against the Kubernetes OpenAPI schemas offline (kubernetes-validate, strict:
unknown fields are errors). Custom resources have no schema there and are listed as skipped.

Usage: validate.py <kubernetes version> <rendered.yaml>
"""

import re
import subprocess
import sys

version, path = sys.argv[1], sys.argv[2]
run = subprocess.run(["kubernetes-validate", "--strict", "-k", version, path], capture_output=True, text=True)
out = run.stdout + run.stderr
passed = len(re.findall(r"^INFO .* passed", out, re.M))
skipped = sorted(set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", out)))
errors = [line for line in out.splitlines() if not line.startswith(("INFO", "WARN"))]
errors += [line for line in out.splitlines() if line.startswith("WARN") and "Couldn't find schema" not in line]
print(f"{passed} objects valid against Kubernetes {version}")
if skipped:
    print("skipped (custom resources, no schema offline): " + ", ".join(f"{k} ({v})" for k, v in skipped))
if errors or run.returncode != 0 or passed == 0:
    print("\n".join(errors) or f"kubernetes-validate exited {run.returncode}")
    sys.exit(1)
