"""Policy checks on the rendered Kubernetes overlays, compose.yaml and the alert rules.

Usage: manifests.py k8s <env> <rendered.yaml> <deploy dir>
       manifests.py compose <compose.yaml>
       manifests.py rules <rules.yml> <rendered.yaml>
       manifests.py argocd <rendered.yaml> <deploy dir>
Prints one line per problem and exits 1 if there is any.
"""

import os
import re
import sys

import yaml

problems = []

# The processes compose must run (each `serve <name>` from the one image).
MERCATO_SERVICES = ("auth", "users", "catalog", "cart", "orders", "payments", "ledger", "refunds",
                    "deliveries", "notifications", "analytics", "support", "gateway")

# Services that keep blobs (platform::blob): catalog (product images), support (ticket attachments). In
# Kubernetes their data directory is an emptyDir (per pod, lost on restart), so every overlay must give them a
# bucket, MERCATO_S3_BUCKET in a ConfigMap they read, and the key pair (possibly empty: the AWS credentials
# chain) from a secret.
BLOB_SERVICES = ("catalog", "support")
S3_SECRET_KEYS = ("MERCATO_S3_ACCESS_KEY_ID", "MERCATO_S3_SECRET_ACCESS_KEY")

# TLS between services (components/grpc-tls): the settings naming its files, and the Secret that holds them.
GRPC_TLS_SETTINGS = ("MERCATO_GRPC_TLS_CERT", "MERCATO_GRPC_TLS_KEY", "MERCATO_GRPC_TLS_CA")
GRPC_TLS_SECRET = "mercato-grpc-tls"
# Environments that must run it.
GRPC_TLS_ENVS = ("staging", "prod")


def fail(msg):
    problems.append(msg)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_pod(owner, spec, is_mercato):
    where = name(owner)
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(f"{where}: pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{where}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken must be false")
    for c in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{cw}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{cw}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fail(f"{cw}: capabilities must drop ALL")
        if sc.get("seccompProfile", {}).get("type", "RuntimeDefault") != "RuntimeDefault":
            fail(f"{cw}: seccompProfile must be RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fail(f"{cw}: resources.{kind}.{r} missing")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                fail(f"{cw}: {probe} missing")
    if not is_mercato:
        return
    c = spec["containers"][0]
    cw = f"{where} container {c['name']}"
    component = owner["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
    # With TLS between services the kubelet's gRPC probe (which cannot speak TLS) gives way to HTTP on 9090.
    tls = any(v.get("secret", {}).get("secretName") == GRPC_TLS_SECRET for v in spec.get("volumes", []))
    for probe in ("livenessProbe", "readinessProbe"):
        p = c.get(probe, {})
        if component == "gateway" or owner["metadata"]["name"] == "gateway" or tls:
            get = p.get("httpGet", {})
            want = "/healthz" if probe == "livenessProbe" else "/readyz"
            if get.get("path") != want or port_number(c, get.get("port")) != 9090:
                fail(f"{cw}: {probe} must be httpGet {want} on 9090")
        else:
            grpc_ports = [x["containerPort"] for x in c.get("ports", []) if x.get("name") == "grpc"]
            if "grpc" not in p or [p["grpc"].get("port")] != grpc_ports:
                fail(f"{cw}: {probe} must be a native grpc probe on the grpc port {grpc_ports}")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if pre is None:
        fail(f"{cw}: lifecycle.preStop.sleep missing")
    elif not grace > pre + 10:
        fail(f"{where}: terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + 10s drain")
    if not spec.get("topologySpreadConstraints"):
        fail(f"{where}: topologySpreadConstraints missing")
    env = {}
    for src in c.get("envFrom", []):
        env.setdefault("from", []).append(src)
    args = c.get("args", [])
    if args[:1] != ["serve"] or len(args) != 2 or args[1] != owner["metadata"]["name"]:
        fail(f"{cw}: args must be ['serve', '{owner['metadata']['name']}'], got {args}")


def selects(selector, labels):
    ml = selector.get("matchLabels", {})
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def check_k8s(env, rendered, deploy_dir):
    docs = load_all(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    ns = f"mercato-{env}"
    for d in docs:
        if d["kind"] == "Namespace":
            if d["metadata"]["name"] != ns:
                fail(f"{name(d)}: expected namespace {ns}")
        elif d["metadata"].get("namespace") != ns:
            fail(f"{name(d)}: namespace is {d['metadata'].get('namespace')}, expected {ns}")
        if d["kind"] == "Secret":
            fail(f"{name(d)}: plain Secret in the manifests; use an ExternalSecret")
    if not by_kind.get("ExternalSecret"):
        fail("no ExternalSecret")
    for sa in by_kind.get("ServiceAccount", []):
        if sa.get("automountServiceAccountToken") is not False:
            fail(f"{name(sa)}: automountServiceAccountToken must be false")
    pols = by_kind.get("NetworkPolicy", [])
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in pols):
        fail("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
    if not any(any(any(pt.get("port") == 53 for pt in r.get("ports", [])) for r in p["spec"].get("egress", []))
               and p["spec"]["podSelector"] == {} for p in pols):
        fail("no NetworkPolicy allowing DNS egress to every pod")
    prefix = {"dev": "dev-", "staging": "staging-v", "prod": "prod-v"}[env]
    monitors = {m["metadata"]["name"] for m in by_kind.get("ServiceMonitor", [])}
    services = {s["metadata"]["name"] for s in by_kind.get("Service", [])}
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    pdbs = by_kind.get("PodDisruptionBudget", [])
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail("no Deployment rendered")
    for d in deployments:
        n = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check_pod(d, spec, True)
        image = spec["containers"][0]["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        if not tag.startswith(prefix):
            fail(f"{name(d)}: image {image} should carry a {prefix}* tag in {env}")
        if n not in services:
            fail(f"{name(d)}: no Service {n}")
        if n not in monitors:
            fail(f"{name(d)}: no ServiceMonitor {n}")
        if not any(p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == n
                   and "Ingress" in p["spec"].get("policyTypes", []) for p in pols):
            fail(f"{name(d)}: no NetworkPolicy of its own")
        if n not in {s.get("spec", {}).get("serviceAccountName") for s in [d["spec"]["template"]]}:
            pass
        if spec.get("serviceAccountName") != n:
            fail(f"{name(d)}: serviceAccountName should be {n}")
        if env == "prod":
            if n not in hpas:
                fail(f"{name(d)}: no HorizontalPodAutoscaler in prod")
            if not any(selects(p["spec"]["selector"], labels) for p in pdbs):
                fail(f"{name(d)}: no PodDisruptionBudget in prod")
            if "replicas" in d["spec"]:
                fail(f"{name(d)}: replicas set in prod, where the HorizontalPodAutoscaler owns them")
    for s in by_kind.get("StatefulSet", []):
        check_pod(s, s["spec"]["template"]["spec"], False)
    rmq = by_kind.get("RabbitmqCluster", [])
    if not rmq:
        fail("no RabbitmqCluster")
    elif env != "dev" and rmq[0]["spec"].get("replicas") != 3:
        fail("RabbitmqCluster must have 3 replicas outside dev")
    # ExternalSecrets read this environment's entries (mercato/<env>/...), which the overlays patch in.
    es_keys = {}
    for es in by_kind.get("ExternalSecret", []):
        spec = es["spec"]
        target = spec.get("target", {}).get("name", es["metadata"]["name"])
        keys = es_keys.setdefault(target, set())
        for item in spec.get("data", []):
            keys.add(item["secretKey"])
            if not item["remoteRef"]["key"].startswith(f"mercato/{env}/"):
                fail(f"{name(es)}: reads {item['remoteRef']['key']}, not an entry under mercato/{env}/")
        for item in spec.get("dataFrom", []):
            keys.add("*")
            key = item.get("extract", {}).get("key", "")
            if not key.startswith(f"mercato/{env}/"):
                fail(f"{name(es)}: reads {key}, not an entry under mercato/{env}/")
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
    for d in deployments:
        c = d["spec"]["template"]["spec"]["containers"][0]
        secret_env = {}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if not ref or ref["name"].endswith("-db-app"):
                continue
            secret_env[e["name"]] = ref["name"]
            keys = es_keys.get(ref["name"])
            if keys is None:
                fail(f"{name(d)}: env {e['name']} reads Secret {ref['name']}, which no ExternalSecret makes")
            elif ref["key"] not in keys and "*" not in keys:
                fail(f"{name(d)}: env {e['name']} reads key {ref['key']}, not in ExternalSecret {ref['name']}'s data")
        for src in c.get("envFrom", []):
            if "secretRef" in src and src["secretRef"]["name"] not in es_keys:
                fail(f"{name(d)}: envFrom Secret {src['secretRef']['name']}, which no ExternalSecret makes")
        if d["metadata"]["name"] in BLOB_SERVICES:
            read = [configmaps.get(src["configMapRef"]["name"], {}) for src in c.get("envFrom", [])
                    if "configMapRef" in src]
            if not any(cm.get("MERCATO_S3_BUCKET") for cm in read):
                fail(f"{name(d)}: keeps blobs, so a ConfigMap it reads must set MERCATO_S3_BUCKET "
                     "(its data directory is per pod)")
            for key in S3_SECRET_KEYS:
                if key not in secret_env:
                    fail(f"{name(d)}: keeps blobs in S3, so env {key} must come from a secret")
    check_grpc_tls(env, configmaps, deployments, by_kind.get("Certificate", []))
    dbs = {c["metadata"]["name"] for c in by_kind.get("Cluster", [])}
    for d in deployments:
        for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef", {}).get("name", "")
            if ref.endswith("-db-app") and ref[: -len("-app")] not in dbs:
                fail(f"{name(d)}: reads {ref} but there is no CloudNativePG Cluster {ref[:-len('-app')]}")
    ing = by_kind.get("Ingress", [])
    if not ing or "cert-manager.io/cluster-issuer" not in ing[0]["metadata"].get("annotations", {}):
        fail("gateway Ingress with a cert-manager.io/cluster-issuer annotation missing")
    print(f"{env}: {len(docs)} objects, {len(deployments)} Deployments checked")


def check_grpc_tls(env, configmaps, deployments, certificates):
    """TLS between services is all or nothing: the three settings, https:// service URLs, the Secret mounted where
    the settings say in every pod, and a Certificate for every service host called."""
    common = next((data for n, data in configmaps.items() if n.startswith("mercato-common")), {})
    urls = {k: v for k, v in common.items() if k.endswith("_URL") and k.startswith("MERCATO_")
            and k[len("MERCATO_"):-len("_URL")].lower() in MERCATO_SERVICES}
    given = [k for k in GRPC_TLS_SETTINGS if k in common]
    if not given:
        if env in GRPC_TLS_ENVS:
            fail(f"{env}: TLS between services is off; include components/grpc-tls")
        for k, v in urls.items():
            if not v.startswith("http://"):
                fail(f"mercato-common {k}={v}: without MERCATO_GRPC_TLS_* service URLs are http://")
        return
    for k in GRPC_TLS_SETTINGS:
        if k not in given:
            fail(f"mercato-common: {k} missing; TLS between services needs all of {', '.join(GRPC_TLS_SETTINGS)}")
    hosts = set()
    for k, v in urls.items():
        if not v.startswith("https://"):
            fail(f"mercato-common {k}={v}: with TLS between services every service URL is https://")
        hosts.update(u.split("://", 1)[-1].rsplit(":", 1)[0] for u in v.split(","))
    dirs = {os.path.dirname(common[k]) for k in given}
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        volumes = {v["name"] for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") == GRPC_TLS_SECRET}
        mounts = {m["mountPath"] for m in spec["containers"][0].get("volumeMounts", []) if m["name"] in volumes}
        if not dirs <= mounts:
            fail(f"{name(d)}: must mount Secret {GRPC_TLS_SECRET} at {', '.join(sorted(dirs))} (TLS between services)")
    certs = [c for c in certificates if c["spec"].get("secretName") == GRPC_TLS_SECRET]
    if not certs:
        fail(f"{env}: no cert-manager Certificate writes Secret {GRPC_TLS_SECRET}")
        return
    spec = certs[0]["spec"]
    missing = sorted(hosts - set(spec.get("dnsNames", [])))
    if missing:
        fail(f"{name(certs[0])}: dnsNames lack {', '.join(missing)}, which the service URLs call")
    for usage in ("server auth", "client auth"):
        if usage not in spec.get("usages", []):
            fail(f"{name(certs[0])}: usages lack {usage!r} (every process is a server and a client)")


def check_compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    svcs = doc.get("services", {})
    nets = set(doc.get("networks", {}))
    vols = set(doc.get("volumes", {}))
    for req in ("postgres", "rabbitmq", "redis", *MERCATO_SERVICES, "prometheus", "grafana", "jaeger"):
        if req not in svcs:
            fail(f"compose: service {req} missing")
    for n, s in svcs.items():
        if "image" not in s and "build" not in s:
            fail(f"compose {n}: no image or build")
        if "healthcheck" not in s:
            fail(f"compose {n}: no healthcheck")
        if "restart" not in s:
            fail(f"compose {n}: no restart policy")
        for net in s.get("networks", []):
            if net not in nets:
                fail(f"compose {n}: unknown network {net}")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if not src.startswith(".") and not src.startswith("/") and src not in vols:
                fail(f"compose {n}: unknown volume {src}")
            if src.startswith("."):
                full = os.path.join(os.path.dirname(path), src)
                if not os.path.exists(full):
                    fail(f"compose {n}: bind source {src} does not exist")
        deps = s.get("depends_on", {})
        for dep, cond in (deps.items() if isinstance(deps, dict) else []):
            if dep not in svcs:
                fail(f"compose {n}: depends on unknown service {dep}")
            if cond.get("condition") != "service_healthy":
                fail(f"compose {n}: depends_on {dep} must wait for service_healthy")
            if svcs.get(dep, {}).get("profiles") and not s.get("profiles"):
                fail(f"compose {n}: depends on {dep}, which is only in a profile")
        env = s.get("environment", {})
        for k, v in (env.items() if isinstance(env, dict) else []):
            if re.search(r"PASSWORD|PASS$|SECRET", k) or re.search(r"://[^/@\s]+:[^/@\s]+@", str(v)):
                fail(f"compose {n}: {k} looks like a secret in clear; put it in the env_file")
    # every container of the Mercato image: the listed ones must exist, any other `serve <name>` is checked too
    served = [n for n, s in svcs.items() if s.get("command", [])[:1] == ["serve"]]
    for n in dict.fromkeys([*MERCATO_SERVICES, *served]):
        s = svcs.get(n, {})
        if s.get("command") != ["serve", n]:
            fail(f"compose {n}: command must be [serve, {n}]")
        if s.get("read_only") is not True:
            fail(f"compose {n}: read_only must be true")
        if s.get("healthcheck", {}).get("test", [])[1:2] != ["/usr/local/bin/mercato"]:
            fail(f"compose {n}: healthcheck must run mercato healthcheck")
        if "backend" not in s.get("networks", []):
            fail(f"compose {n}: must be on the backend network")
        # The root filesystem is read-only: the data directory (SQLite files, blobs) must be a named volume.
        data_dir = (s.get("environment") or {}).get("MERCATO_DATA_DIR", "/var/lib/mercato")
        mounts = [v.split(":")[:2] for v in s.get("volumes", []) if isinstance(v, str)]
        if not any(len(m) == 2 and m[1] == data_dir and m[0] in vols for m in mounts):
            fail(f"compose {n}: its data directory {data_dir} must be on a named volume")
        # Without a CPU limit each runtime starts a worker thread per host CPU (see compose.yaml).
        limits = s.get("deploy", {}).get("resources", {}).get("limits", {})
        if not limits.get("cpus") or not limits.get("memory"):
            fail(f"compose {n}: needs deploy.resources.limits (cpus and memory)")
    if not doc.get("networks", {}).get("backend", {}).get("internal"):
        fail("compose: the backend network must be internal")
    published = [n for n, s in svcs.items() if s.get("ports") and not s.get("profiles")]
    if published != ["gateway"]:
        fail(f"compose: only the gateway may publish ports outside profiles, got {published}")
    if not any(str(p).endswith("8080}:8080") or str(p) == "8080:8080" for p in svcs.get("gateway", {}).get("ports", [])):
        fail("compose: gateway must be published on 8080")
    print(f"compose: {len(svcs)} services checked")


def check_rules(rules_path, rendered):
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    found = [d for d in load_all(rendered) if d["kind"] == "PrometheusRule"]
    if not found:
        fail("no PrometheusRule in the rendered manifests")
    elif found[0]["spec"] != rules:
        fail(f"PrometheusRule {found[0]['metadata']['name']} differs from {rules_path}: copy the groups over "
             "(deploy/k8s/base/monitoring/prometheusrule.yaml)")
    text = open(rules_path).read()
    for metric in ('grpc_server_requests_total{code!="Ok"}', 'http_server_requests_total{status=~"5.."}',
                   "grpc_server_request_duration_seconds_bucket", "http_server_request_duration_seconds_bucket",
                   "kube_pod_container_status_restarts_total", "mercato_outbox_depth",
                   "mercato_dead_letters_total"):
        if metric not in text:
            fail(f"alert rules do not use {metric}")
    print("rules: PrometheusRule matches the promtool-tested rules file")


def check_argocd(rendered, deploy_dir):
    apps = [d for d in load_all(rendered) if d["kind"] == "Application"]
    envs = set()
    for a in apps:
        src = a["spec"]["source"]
        env = src["path"].rstrip("/").rsplit("/", 1)[-1]
        envs.add(env)
        if not os.path.isfile(os.path.join(deploy_dir, "..", src["path"], "kustomization.yaml")):
            fail(f"{name(a)}: path {src['path']} has no kustomization.yaml")
        if a["spec"]["destination"].get("namespace") != f"mercato-{env}":
            fail(f"{name(a)}: destination namespace must be mercato-{env}")
        auto = a["spec"].get("syncPolicy", {}).get("automated")
        if env in ("staging", "prod") and not (auto and auto.get("prune") and auto.get("selfHeal")):
            fail(f"{name(a)}: automated sync with prune and selfHeal required")
    if envs != {"dev", "staging", "prod"}:
        fail(f"argocd: expected Applications for dev, staging and prod, got {sorted(envs)}")
    print(f"argocd: {len(apps)} Applications checked")


def main():
    what, args = sys.argv[1], sys.argv[2:]
    {"k8s": check_k8s, "compose": check_compose, "rules": check_rules, "argocd": check_argocd}[what](*args)
    for p in problems:
        print(f"  problem: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
