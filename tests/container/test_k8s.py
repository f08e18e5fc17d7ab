"""The Kubernetes manifests (k8s/): every variant builds with `kubectl kustomize`, the core
objects validate strictly against Kubernetes 1.32's schemas (kubernetes-validate), the
ServiceMonitor (a CRD the validator has no schema for) has the operator's shape and
selects the right Service and port, the StatefulSets follow the memory, drain, probe and
security rules, and every proxy configuration names exactly the pods the StatefulSets
create. No Docker needed.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
VARIANTS = [
    "base",
    "overlays/replicated",
    "overlays/twemproxy",
    "overlays/mcrouter",
    "overlays/sidecar-near-cache",
    "overlays/tls",
    "overlays/warm-restart",
]
# The slowest save measured (BENCHMARKS.md, "Warm restart"): seconds per GiB of -m.
SAVE_SECONDS_PER_GIB = 4
# kubectl's version here (v1.32); kubernetes-validate 1.37.0 bundles 1.25 to 1.37.
KUBERNETES_VERSION = "1.32.0"
DRAIN_SECONDS = 10  # src/server/mod.rs DRAIN_TIMEOUT
KiB = 1024
MiB = 1024 * 1024


def kubectl():
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not installed (its kustomize builds k8s/)", pytrace=False
        )
    return path


_BUILT = {}


def build(variant):
    if variant not in _BUILT:
        proc = subprocess.run(
            [kubectl(), "kustomize", str(K8S / variant)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        _BUILT[variant] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _BUILT[variant]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (
        kind,
        name,
        [d["metadata"]["name"] for d in of_kind(docs, kind)],
    )
    return found[0]


def quantity(q):
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "k": 1000, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(q))
    assert m, q
    return int(m.group(1)) * units.get(m.group(2), 1)


def flag(args, short, long=None):
    """The value of a memcached flag in a container's args (-m 64, -m64, --memory-limit=64)."""
    for i, a in enumerate(args):
        if a == short or (long and a == long):
            return args[i + 1]
        if a.startswith(short) and len(a) > len(short) and not a.startswith("--"):
            return a[len(short) :].strip()
        if long and a.startswith(long + "="):
            return a.split("=", 1)[1]
    return None


def extended(args, name):
    """The value of `-o name=value` in a container's args, if given."""
    opts = [flag(args[i:], "-o", "--extended") for i, a in enumerate(args)]
    for opt in filter(None, opts):
        for part in opt.split(","):
            key, _, value = part.partition("=")
            if key.strip() == name:
                return value.strip()
    return None


def item_size(value):
    """-I as memcached reads it (1m, 512k, bytes)."""
    units = {"k": 1024, "m": MiB, "g": 1024 * MiB}
    value = value.strip().lower()
    if value[-1:] in units:
        return int(value[:-1]) * units[value[-1]]
    return int(value)


def memory_bound(args):
    """ARCHITECTURE.md's bound on RSS: M + B + C x 48 KiB + C x 0.4 KiB + T x 5 MiB + 24 MiB,
    with every connection busy."""
    m = int(flag(args, "-m", "--memory-limit") or 64) * MiB
    conns = int(flag(args, "-c", "--conn-limit") or 1024)
    threads = int(flag(args, "-t", "--threads") or 4)
    item_max = item_size(flag(args, "-I", "--max-item-size") or "1m")
    cap = extended(args, "read_buf_mem_limit")
    buffers = int(cap) * MiB if cap is not None else max(32 * MiB, m // 8, 4 * item_max)
    return m + buffers + conns * (48 * KiB + 410) + threads * 5 * MiB + 24 * MiB


def memcrab_containers(docs):
    """(pod spec, container) for every memcrab container in a workload."""
    out = []
    for d in docs:
        if d["kind"] not in ("StatefulSet", "Deployment", "DaemonSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["image"].split("/")[-1].startswith("memcrab-memcached"):
                out.append((d, spec, c))
    return out


def pod_names(docs):
    """Per-pod DNS names (pod.service:port) of every memcrab StatefulSet."""
    names = {}
    for sts in of_kind(docs, "StatefulSet"):
        name, svc = sts["metadata"]["name"], sts["spec"]["serviceName"]
        c = sts["spec"]["template"]["spec"]["containers"][0]
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == "memcache")
        names[name] = [
            f"{name}-{i}.{svc}:{port}" for i in range(sts["spec"]["replicas"])
        ]
    return names


def lua_pools(text):
    """pool name -> backends of a routelib `pools{ name = { backends = {...} } }` config."""
    pools = {}
    for m in re.finditer(r"(\w+)\s*=\s*\{\s*backends\s*=\s*\{([^}]*)\}", text):
        pools[m.group(1)] = re.findall(r'"([^"]+)"', m.group(2))
    return pools


def config_data(docs, prefix, key):
    maps = [
        d
        for d in of_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith(prefix)
    ]
    assert len(maps) == 1, [d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")]
    return maps[0]["data"][key]


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomize_builds(variant):
    docs = build(variant)
    assert of_kind(docs, "StatefulSet")


@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_validate_strictly(variant):
    kv = pytest.importorskip("kubernetes_validate")
    errors = []
    for d in build(variant):
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: see test_servicemonitor_shape
        if d["apiVersion"].startswith("cert-manager.io/"):
            continue  # a CRD: see test_tls_mounts_the_certificate_cert_manager_issues
        try:
            kv.validate(d, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {e.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_servicemonitor_shape(variant):
    docs = build(variant)
    monitors = of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    sm = monitors[0]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    want = sm["spec"]["selector"]["matchLabels"]
    assert set(sm["spec"]["selector"]) == {"matchLabels"}
    services = [
        s
        for s in of_kind(docs, "Service")
        if want.items() <= s["metadata"].get("labels", {}).items()
    ]
    # Exactly the headless Service of every StatefulSet (no double scrapes).
    assert sorted(s["metadata"]["name"] for s in services) == sorted(
        sts["spec"]["serviceName"] for sts in of_kind(docs, "StatefulSet")
    )
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", ep["interval"])
        for s in services:
            assert ep["port"] in [p["name"] for p in s["spec"]["ports"]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_memcrab_containers_follow_the_rules(variant):
    docs = build(variant)
    found = memcrab_containers(docs)
    assert found
    for workload, spec, c in found:
        where = f"{workload['metadata']['name']}/{c['name']}"
        args = c.get("args", [])
        assert "command" not in c, f"{where}: keep the image's entrypoint"
        # Memory: limit >= ARCHITECTURE.md's bound with every connection busy; request ==
        # limit.
        assert flag(args, "-m", "--memory-limit") is not None, f"{where}: no -m"
        limit = quantity(c["resources"]["limits"]["memory"])
        assert (
            c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
        )
        assert limit >= memory_bound(args), (where, args, limit, memory_bound(args))
        # Drain: the grace period covers preStop + the server's drain.
        pre = (
            c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        )
        assert spec["terminationGracePeriodSeconds"] >= pre + DRAIN_SECONDS + 2, where
        assert "livenessProbe" not in c, (
            f"{where}: a liveness probe restarts a busy cache"
        )
        # Security: non-root (the image's uid), read-only, no capabilities.
        sc, psc = c["securityContext"], spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 11211
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert spec["enableServiceLinks"] is False, (
            f"{where}: a Service named memcrab-metrics would set MEMCRAB_METRICS_PORT"
        )
        assert "memcached" in c["image"], (
            "Grafana's dashboard matches 'memcached' images"
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_statefulsets(variant):
    docs = build(variant)
    for sts in of_kind(docs, "StatefulSet"):
        name = sts["metadata"]["name"]
        spec = sts["spec"]["template"]["spec"]
        c = spec["containers"][0]
        args = c["args"]
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        # Headless Service for per-pod DNS, selecting exactly this StatefulSet's pods.
        svc = named(docs, "Service", sts["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        # Readiness on /readyz through --metrics-port; the scrape annotations agree.
        metrics_port = int(flag(args, "--metrics-port", "--metrics-port"))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"memcache": 11211, "metrics": metrics_port}
        probe = c["readinessProbe"]["httpGet"]
        assert probe["path"] == "/readyz" and ports[probe["port"]] == metrics_port
        ann = sts["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(metrics_port)
        # One pod per node.
        spread = spec["topologySpreadConstraints"]
        host = [t for t in spread if t["topologyKey"] == "kubernetes.io/hostname"]
        assert host and host[0]["maxSkew"] == 1
        assert host[0]["whenUnsatisfiable"] == "DoNotSchedule"
        sel = host[0]["labelSelector"]
        if "matchLabels" in sel:
            assert sel["matchLabels"].items() <= pod_labels.items()
        else:
            for e in sel["matchExpressions"]:
                assert e["operator"] == "In" and pod_labels[e["key"]] in e["values"]
        # A PodDisruptionBudget per StatefulSet.
        pdbs = [
            p
            for p in of_kind(docs, "PodDisruptionBudget")
            if p["spec"]["selector"]["matchLabels"]
            == sts["spec"]["selector"]["matchLabels"]
        ]
        assert len(pdbs) == 1, name
        assert pdbs[0]["spec"]["maxUnavailable"] == 1


def test_no_service_name_collides_with_memcrab_environment():
    # Service links turn Service "memcrab-metrics" into MEMCRAB_METRICS_PORT=tcp://...
    for variant in VARIANTS:
        for svc in of_kind(build(variant), "Service"):
            env = svc["metadata"]["name"].upper().replace("-", "_")
            assert env != "MEMCRAB_METRICS", variant


def test_base_has_a_client_service_over_ready_pods():
    docs = build("base")
    client = named(docs, "Service", "memcrab-client")
    assert client["spec"].get("clusterIP") != "None"
    assert not client["spec"].get("publishNotReadyAddresses", False)


def test_replicated_pools_name_exactly_the_pods():
    docs = build("overlays/replicated")
    pods = pod_names(docs)
    assert sorted(pods) == ["memcrab-0", "memcrab-1"]
    assert pods["memcrab-0"][0] == "memcrab-0-0.memcrab-0:11211"
    pools = lua_pools(config_data(docs, "memcrab-proxy-config", "config.lua"))
    assert pools == {"set_a": pods["memcrab-0"], "set_b": pods["memcrab-1"]}
    text = config_data(docs, "memcrab-proxy-config", "config.lua")
    assert re.search(
        r"default\s*=\s*route_allsync\{\s*children\s*=\s*\{\s*\"set_a\",\s*\"set_b\"",
        text,
    )
    assert re.search(r"get\s*=\s*route_allfastest", text)
    # The proxy mounts the generated ConfigMap and points memcached at the file in it.
    proxy = named(docs, "Deployment", "memcrab-proxy")
    spec = proxy["spec"]["template"]["spec"]
    volume = spec["volumes"][0]["configMap"]["name"]
    assert volume.startswith("memcrab-proxy-config-")
    mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
    assert f"proxy_arg={mount}/config.lua" in " ".join(spec["containers"][0]["args"])
    # The two pools' pods are spread together and kept apart from each other.
    for sts in of_kind(docs, "StatefulSet"):
        other = "memcrab-1" if sts["metadata"]["name"] == "memcrab-0" else "memcrab-0"
        term = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ][0]["podAffinityTerm"]
        assert term["labelSelector"]["matchExpressions"][0]["values"] == [other]


def test_twemproxy_names_exactly_the_pods():
    docs = build("overlays/twemproxy")
    pods = pod_names(docs)["memcrab"]
    conf = yaml.safe_load(config_data(docs, "memcrab-twemproxy", "nutcracker.yml"))
    (pool,) = conf.values()
    assert pool["hash"] == "fnv1a_64"
    assert pool["distribution"] == "ketama"
    assert pool["auto_eject_hosts"] is True
    servers = [s.split() for s in pool["servers"]]
    assert [s[0].rsplit(":", 1)[0] for s in servers] == pods
    assert [s[1] for s in servers] == [p.split(".")[0] for p in pods]  # ketama names
    ds = named(docs, "DaemonSet", "memcrab-twemproxy")
    spec = ds["spec"]["template"]["spec"]
    assert spec["volumes"][0]["configMap"]["name"].startswith("memcrab-twemproxy-")
    listen_port = int(pool["listen"].rsplit(":", 1)[1])
    assert spec["containers"][0]["ports"][0]["containerPort"] == listen_port
    svc = named(docs, "Service", "memcrab-twemproxy")
    assert svc["spec"]["internalTrafficPolicy"] == "Local"


def test_twemproxy_config_parses_with_nutcracker(tmp_path):
    nutcracker = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    if not Path(nutcracker).exists():
        pytest.skip("nutcracker is not installed")
    docs = build("overlays/twemproxy")
    text = config_data(docs, "memcrab-twemproxy", "nutcracker.yml")
    # Same file with resolvable addresses (the pods' names resolve only in the cluster).
    local = re.sub(r"memcrab-\d\.memcrab", "127.0.0.1", text)
    conf = tmp_path / "nutcracker.yml"
    conf.write_text(local)
    proc = subprocess.run(
        [nutcracker, "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mcrouter_names_exactly_the_pods():
    docs = build("overlays/mcrouter")
    pods = pod_names(docs)["memcrab"]
    conf = json.loads(config_data(docs, "memcrab-mcrouter", "config.json"))
    assert conf["pools"]["memcrab"]["servers"] == pods
    assert conf["route"] == "PoolRoute|memcrab"
    ds = named(docs, "DaemonSet", "memcrab-mcrouter")
    port = ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert port["containerPort"] == port["hostPort"] == 5000


def test_sidecar_near_cache_names_the_sidecar_and_exactly_the_pods():
    docs = build("overlays/sidecar-near-cache")
    pods = pod_names(docs)["memcrab"]
    pools = lua_pools(config_data(docs, "app-near-cache-proxy", "config.lua"))
    app = named(docs, "Deployment", "app")
    near = next(
        c
        for c in app["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == "near-cache"
    )
    assert near["restartPolicy"] == "Always"
    near_addr = f"{flag(near['args'], '-l')}:{flag(near['args'], '-p')}"
    assert pools == {"near": [near_addr], "far": pods}
    text = config_data(docs, "app-near-cache-proxy", "config.lua")
    assert re.search(
        r"route_failover\{\s*children\s*=\s*\{\s*\"near\",\s*\"far\"\s*\}", text
    )


def test_tls_mounts_the_certificate_cert_manager_issues():
    docs = build("overlays/tls")
    (cert,) = of_kind(docs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert set(cert["spec"]) <= {
        "secretName", "duration", "renewBefore", "privateKey", "usages", "dnsNames",
        "issuerRef", "commonName", "subject",
    }
    assert cert["spec"]["issuerRef"]["kind"] in ("Issuer", "ClusterIssuer")
    (sts,) = of_kind(docs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (c,) = [c for c in spec["containers"] if c["name"] == "memcrab"]
    (mount,) = [m for m in c["volumeMounts"] if volumes[m["name"]].get("secret")]
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == cert["spec"]["secretName"]
    assert mount["readOnly"] is True
    # The flags name the Secret's files under the mount (cert-manager's key names).
    args = c["args"]
    assert "-Z" in args
    opts = dict(
        o.split("=", 1)
        for a, o in zip(args, args[1:])
        if a == "-o"
        for o in o.split(",")
        if "=" in o
    )
    base = mount["mountPath"].rstrip("/")
    assert opts["ssl_chain_cert"] == f"{base}/tls.crt"
    assert opts["ssl_key"] == f"{base}/tls.key"
    assert opts["ssl_ca_cert"] == f"{base}/ca.crt"
    assert opts["ssl_verify_mode"] in ("2", "3")
    # Every pod's DNS name and the client Service are covered by the certificate.
    names = cert["spec"]["dnsNames"]
    assert f"*.{sts['spec']['serviceName']}" in names
    clients = [s["metadata"]["name"] for s in of_kind(docs, "Service")
               if s["spec"].get("clusterIP") != "None"]
    assert all(name in names for name in clients)


def test_warm_restart_keeps_the_file_on_a_claim_and_has_time_to_save_it():
    docs = build("overlays/warm-restart")
    (sts,) = of_kind(docs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == "memcrab"]
    args = c["args"]
    path = flag(args, "-e", "--memory-file")
    assert path, "no -e"
    # The file's directory is a per-pod claim (it outlives the pod), writable by the
    # server's group.
    (mount,) = [
        m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims
    assert not mount.get("readOnly")
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    # The claim holds a snapshot of -m (plus 2% of headers).
    m = int(flag(args, "-m", "--memory-limit")) * MiB
    size = quantity(claims[mount["name"]]["spec"]["resources"]["requests"]["storage"])
    assert size >= m * 1.05, (size, m)
    # The grace period covers the preStop pause, the drain and the save.
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    save = m / (1024 * MiB) * SAVE_SECONDS_PER_GIB
    assert spec["terminationGracePeriodSeconds"] >= pre + DRAIN_SECONDS + save + 2
    # Readiness stays on /readyz, which fails while the file is read back.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
