"""deploy/k8s: the Kubernetes manifests, checked offline.

No cluster runs here, so the manifests are checked by what can be checked without one: every object
validates against the Kubernetes JSON schemas of a current release (kubernetes-validate, --strict,
schemas shipped in the wheel), the PodMonitor and cert-manager's Certificate (CRDs) by shape, checkov finds nothing that is not
explained, the prometheus-adapter rule's PromQL parses, and the objects agree with each other, with
docker-compose.yml, with the capacity model and with the server: the container runs the compose
server command (tests/loopback.py runs that very command for the loopback cluster, and probes it
the way the manifest's gRPC probes do), with TLS and tokens from mounted Secrets, no explorer, and
a NetworkPolicy that admits labelled client namespaces and Prometheus only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from embserve_client.channel import channel_options
from loopback import Cluster, argv_flags, container_port, probe, probe_service

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"  # newest schemas kubernetes-validate==1.37.0 ships
TOOL_TIMEOUT = 300
# checkov findings we keep, each with its reason (also written in the skip annotation itself).
EXPLAINED_SKIPS = {
    "CKV_K8S_43": "images are built from this repository: no registry digest exists until a release pins one",
}
# Beyond the compose server command: the drain, and what keeps strangers out (TLS and tokens from
# the Secrets, rotated without a restart; plaintext probes of a health-only port; json logs).
EXTRA_SERVER_FLAGS = {"--grace-period", "--max-connection-age", "--tls-cert", "--tls-key", "--auth-token-file", "--rotation-interval",
                      "--health-address", "--log-format"}
DROPPED_SERVER_FLAGS = {"--explorer"}  # compose (bound to 127.0.0.1) has the explorer; the cluster only when asked for
TLS_MOUNT, TOKENS_MOUNT = "/etc/embserve/tls", "/etc/embserve/tokens"
# cert-manager.io/v1 Certificate fields (the subset we may use) and the keys of the Secret it writes.
CERTIFICATE_SPEC_FIELDS = {"secretName", "issuerRef", "duration", "renewBefore", "privateKey", "usages", "dnsNames", "ipAddresses",
                           "commonName", "subject", "secretTemplate", "revisionHistoryLimit"}
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}
# PodMonitor fields the Prometheus Operator's CRD defines (the subset we may use), by level.
PODMONITOR_SPEC_FIELDS = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels", "sampleLimit"}
PODMONITOR_ENDPOINT_FIELDS = {"port", "portNumber", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings",
                              "metricRelabelings", "tlsConfig"}


# --- helpers ---------------------------------------------------------------------------------------

def _docs(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _objects() -> dict[str, list[dict[str, Any]]]:
    """{file name: objects} of every manifest the kustomization lists."""
    kustomization = _docs(K8S / "kustomization.yaml")[0]
    return {name: _docs(K8S / name) for name in kustomization["resources"]}


def _one(kind: str) -> dict[str, Any]:
    [obj] = [o for objs in _objects().values() for o in objs if o["kind"] == kind]
    return obj


def _deployment() -> dict[str, Any]:
    return _one("Deployment")


def _pod() -> dict[str, Any]:
    return _deployment()["spec"]["template"]  # type: ignore[no-any-return]


def _server() -> dict[str, Any]:
    return next(c for c in _pod()["spec"]["containers"] if c["name"] == "embserve")


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _compose_server() -> dict[str, Any]:
    return _docs(REPO / "docker-compose.yml")[0]["services"]["server"]  # type: ignore[no-any-return]


def _capacity() -> Any:
    spec = importlib.util.spec_from_file_location("capacity", REPO / "bench" / "capacity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(_one("ConfigMap")["data"]["config.yaml"])["rules"]  # type: ignore[no-any-return]


def _tool(name: str, *candidates: Path) -> str:
    """An external tool; missing is a skip here and a failure in CI (CI installs everything)."""
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed; `make install` installs it")
    pytest.skip(f"{name} is not installed (`make install` installs it)")


# --- the kustomization and the schemas ---------------------------------------------------------------

def test_kustomization_lists_every_manifest_one_kind_per_file():
    listed = _docs(K8S / "kustomization.yaml")[0]["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    kinds = {}
    for name, objects in _objects().items():
        assert objects, f"{name} is empty"
        assert len({o["kind"] for o in objects}) == 1, f"{name} holds several kinds"
        kind = objects[0]["kind"]
        assert kind not in kinds, f"{kind} in {name} and {kinds.get(kind)}"
        kinds[kind] = name
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor"} <= set(kinds)


def test_every_manifest_validates_against_the_kubernetes_schemas_strictly():
    import kubernetes_validate

    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"
    assert schemas.is_dir(), "kubernetes-validate ships its schemas: validation needs no network"
    checked = 0
    for objects in _objects().values():
        for obj in objects:
            if obj["apiVersion"].startswith(("monitoring.coreos.com/", "cert-manager.io/")):
                continue  # a CRD: checked by shape below
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= 9


def test_strict_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    deployment = _deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_cli_validates_the_files_as_kubectl_would_read_them():
    cli = _tool("kubernetes-validate", Path(sys.executable).parent / "kubernetes-validate")
    files = [str(K8S / name) for name in _objects() if name not in ("podmonitor.yaml", "certificate.yaml")]
    result = subprocess.run([cli, "--strict", "--quiet", "-k", KUBERNETES_VERSION, *files], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_podmonitor_has_the_shape_of_the_operator_crd_and_scrapes_the_metrics_port():
    monitor = _one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= PODMONITOR_SPEC_FIELDS
    labels = _pod()["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in _server()["ports"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert set(endpoint) <= PODMONITOR_ENDPOINT_FIELDS
    assert endpoint["port"] in ports
    # TLS on the metrics port: Prometheus checks it with the CA of the Secret the pods mount.
    assert endpoint["scheme"] == "https" == _pod()["metadata"]["annotations"]["prometheus.io/scheme"]
    tls = endpoint["tlsConfig"]
    assert set(tls) <= {"ca", "cert", "keySecret", "serverName", "insecureSkipVerify"} and not tls.get("insecureSkipVerify")
    assert tls["ca"]["secret"] == {"name": _one("Certificate")["spec"]["secretName"], "key": "ca.crt"}
    assert tls["serverName"] in _one("Certificate")["spec"]["dnsNames"]
    annotations = _pod()["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports[endpoint["port"]] == _port_of(argv_flags(_server()["command"])["--metrics-address"])
    # The same interval as the docker-compose Prometheus (deploy/prometheus.yml).
    prometheus = _docs(REPO / "deploy" / "prometheus.yml")[0]
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "embserve"]
    assert endpoint["interval"] == job.get("scrape_interval", prometheus["global"]["scrape_interval"])


def test_checkov_finds_nothing_unexplained():
    checkov = _tool("checkov", Path(sys.executable).parent.parent / "tools" / "checkov" / "bin" / "checkov")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [checkov, "-d", str(K8S), "--framework", "kubernetes", "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = report["results"]["failed_checks"]
    assert not failed, [(c["check_id"], c["check_name"], c["resource"]) for c in failed]
    assert report["summary"]["passed"] >= 50 and report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= sum(len(objects) for objects in _objects().values())
    skipped = {c["check_id"]: c["check_result"].get("suppress_comment", "") for c in report["results"]["skipped_checks"]}
    assert set(skipped) <= set(EXPLAINED_SKIPS), f"unexplained skips {set(skipped) - set(EXPLAINED_SKIPS)}"
    for check, reason in skipped.items():
        assert reason.strip(), f"{check} is skipped without a reason"


# --- the Deployment runs what compose and the tests run -------------------------------------------

def test_the_container_runs_the_compose_image_and_server_command_plus_two_flags():
    server, compose = _server(), _compose_server()
    assert server["image"].split(":")[0] == compose["image"].split(":")[0] == "embserve"
    assert server["image"].split(":")[1] != "latest"  # a fixed tag; kustomize's images: sets the release's
    command, compose_command = server["command"], compose["command"]
    assert command[0] == compose_command[0] == "embserve-server"
    flags, compose_flags = argv_flags(command), argv_flags(compose_command)
    kept = {f: v for f, v in compose_flags.items() if f not in DROPPED_SERVER_FLAGS}
    assert {f: flags[f] for f in kept} == kept
    assert set(flags) - set(compose_flags) == EXTRA_SERVER_FLAGS
    assert not DROPPED_SERVER_FLAGS & set(flags)
    result = subprocess.run([str(Path(sys.executable).parent / "embserve-server"), "--help"], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", result.stdout), f"embserve-server --help lacks {flag}"


def test_probes_are_native_grpc_health_checks_on_the_plaintext_health_port():
    # The kubelet's gRPC probe cannot do TLS; an exec probe (`embserve health --ca ...`) would start
    # a Python process every few seconds per pod. The health-only port answers in plaintext with
    # SERVING/NOT_SERVING and nothing else (tests/test_health_port.py).
    server = _server()
    flags = argv_flags(server["command"])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports["grpc"] == _port_of(flags["--address"])
    health_port = _port_of(flags["--health-address"])
    assert ports["health"] == container_port("health") == health_port != ports["grpc"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(server[kind]) - {"periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold", "initialDelaySeconds"} == {"grpc"}
        # The loopback cluster waits on exactly this probe (tests/loopback.py probe_service/probe).
        assert probe_service(kind) == (health_port, "")
    # Loading a table takes a while: the startup probe allows minutes, the others act fast.
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_shutdown_drains_before_the_kubelet_kills():
    pod, server = _pod()["spec"], _server()
    grace = float(argv_flags(server["command"])["--grace-period"])
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace
    assert float(argv_flags(server["command"])["--max-connection-age"]) > 0


def test_pods_run_non_root_read_only_with_tables_mounted_read_only():
    pod = _pod()["spec"]
    uid = int(re.search(r"--uid (\d+)", (REPO / "Dockerfile").read_text()).group(1))  # type: ignore[union-attr]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
    server = _server()
    tables_dir = argv_flags(server["command"])["--tables"]
    [mount] = [m for m in server["volumeMounts"] if m["mountPath"] == tables_dir]
    assert mount["readOnly"] is True
    [init] = pod["initContainers"]
    [init_mount] = [m for m in init["volumeMounts"] if m["name"] == mount["name"]]
    assert not init_mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    # The init container copies the tables image's bundles (Dockerfile.tables) into the volume.
    source = re.search(r"COPY\s+(?:--\S+\s+)*\.\s+(\S+)", (K8S / "Dockerfile.tables").read_text()).group(1)  # type: ignore[union-attr]
    assert init["command"] == ["cp", "-R", source.rstrip("/") + "/.", init_mount["mountPath"] + "/"]
    assert init["image"].split(":")[0] == "embserve-tables"
    images = {i["name"] for i in _docs(K8S / "kustomization.yaml")[0]["images"]}
    assert images == {server["image"].split(":")[0], init["image"].split(":")[0]}


def test_rollout_keeps_capacity_and_spreads_over_nodes():
    deployment = _deployment()
    labels = _pod()["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spread = _pod()["spec"]["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "kubernetes.io/hostname" and c["whenUnsatisfiable"] == "DoNotSchedule" for c in spread)
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_resources_come_from_the_capacity_model():
    capacity = _capacity()
    # The default table: GloVe 6B 50d, 400k x 50 with an HNSW32 index (scripts/default-tables.sh).
    assert _server()["resources"] == capacity.resources(capacity.Table(400_000, 50, "HNSW32,Flat"))
    hpa = _one("HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["target"]["averageValue"] == capacity.hpa_in_flight_target()


def test_services_select_the_pods_and_the_headless_one_is_the_client_target():
    services = {s["metadata"]["name"]: s for s in _docs(K8S / "service.yaml")}
    labels = _pod()["metadata"]["labels"]
    ports = {p["name"] for p in _server()["ports"]}
    assert services["embserve-headless"]["spec"]["clusterIP"] == "None"
    assert services["embserve"]["spec"]["type"] == "ClusterIP"
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    namespace = _docs(K8S / "kustomization.yaml")[0]["namespace"]
    grpc_port = next(p["port"] for p in services["embserve-headless"]["spec"]["ports"] if p["name"] == "grpc")
    target = f"dns:///embserve-headless.{namespace}.svc:{grpc_port}"
    assert target in (REPO / "docs" / "operations.md").read_text(), "the manual's Kubernetes section names another client target"
    assert '"round_robin"' in dict(channel_options(target, max_message_bytes=1 << 20))["grpc.service_config"]


def test_hpa_scales_the_deployment_on_the_adapter_rule_metric():
    hpa, deployment = _one("HorizontalPodAutoscaler"), _deployment()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    [metric] = hpa["spec"]["metrics"]
    [rule] = _adapter_rules()
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert re.match(rule["name"]["matches"], "embserve_in_flight_requests")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_adapter_rule_promql_parses(tmp_path):
    promtool = _tool("promtool")
    [rule] = _adapter_rules()
    # What the adapter substitutes before it queries Prometheus.
    query = (rule["metricsQuery"].replace("<<.Series>>", "embserve_in_flight_requests")
             .replace("<<.LabelMatchers>>", 'namespace="embserve",pod=~"embserve-.*"').replace("<<.GroupBy>>", "pod"))
    rules = {"groups": [{"name": "adapter", "rules": [{"record": "check:series", "expr": rule["seriesQuery"]},
                                                      {"record": "check:metrics", "expr": query}]}]}
    path = tmp_path / "adapter.rules.yml"
    path.write_text(json.dumps(rules), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


# --- what keeps strangers out ----------------------------------------------------------------------

def test_certificate_has_the_shape_of_the_cert_manager_crd_and_names_the_services():
    certificate = _one("Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    spec = certificate["spec"]
    assert set(spec) <= CERTIFICATE_SPEC_FIELDS and {"secretName", "issuerRef", "dnsNames"} <= set(spec)
    issuer = spec["issuerRef"]
    assert set(issuer) <= {"name", "kind", "group"} and issuer["kind"] in ("Issuer", "ClusterIssuer")
    assert issuer.get("group", "cert-manager.io") == "cert-manager.io" and issuer["name"]

    def hours(text: str) -> float:  # Go durations as cert-manager writes them: "2160h", "720h0m0s"
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
        assert parts and any(parts.groups()), f"not a duration: {text!r}"
        h, m, sec = (int(g or 0) for g in parts.groups())
        return h + m / 60 + sec / 3600

    assert hours(spec["duration"]) > hours(spec["renewBefore"]) >= 24 * 7  # renewed with weeks to spare
    assert spec["privateKey"]["rotationPolicy"] == "Always"  # a renewal brings a new key, too
    assert spec["privateKey"]["algorithm"] in ("RSA", "ECDSA", "Ed25519")
    assert "server auth" in spec["usages"]
    namespace = _docs(K8S / "kustomization.yaml")[0]["namespace"]
    names = {s["metadata"]["name"] for s in _docs(K8S / "service.yaml")}
    assert {f"{name}.{namespace}.svc" for name in names} <= set(spec["dnsNames"])


def _secret_mount(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volumeMount, volume) of the Secret mounted at ``path`` in the server container."""
    [mount] = [m for m in _server()["volumeMounts"] if m["mountPath"] == path]
    [volume] = [v for v in _pod()["spec"]["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def test_tls_and_tokens_come_from_secrets_mounted_so_that_renewals_reach_the_server():
    flags = argv_flags(_server()["command"])
    tls_mount, tls_volume = _secret_mount(TLS_MOUNT)
    tokens_mount, tokens_volume = _secret_mount(TOKENS_MOUNT)
    for mount, volume in ((tls_mount, tls_volume), (tokens_mount, tokens_volume)):
        # A subPath mount is a bind mount of one file: the kubelet's ..data swap never reaches it.
        assert mount["readOnly"] is True and "subPath" not in mount and "subPathExpr" not in mount
        assert not volume["secret"].get("items"), "items would pin the keys; the whole Secret is mounted"
        assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    assert tls_volume["secret"]["secretName"] == _one("Certificate")["spec"]["secretName"]
    assert {Path(flags["--tls-cert"]).name, Path(flags["--tls-key"]).name} < CERT_MANAGER_KEYS
    assert Path(flags["--tls-cert"]).parent == Path(flags["--tls-key"]).parent == Path(TLS_MOUNT)
    assert Path(flags["--auth-token-file"]).parent == Path(TOKENS_MOUNT)
    assert tokens_volume["secret"]["secretName"] == "embserve-tokens"
    assert float(flags["--rotation-interval"]) > 0  # renewals are picked up without a restart
    assert "--tls-client-ca" not in flags  # callers authenticate with tokens; mTLS is an option (docs)
    assert flags["--log-format"] == "json"


def test_network_policy_admits_labelled_client_namespaces_and_prometheus_only():
    policy = _one("NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= _pod()["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]
    by_port: dict[str, list[dict[str, Any]]] = {}
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without 'from' admits every source"
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"} and peer["namespaceSelector"]["matchLabels"], peer  # no ipBlock, no open selector
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"grpc", "metrics"}  # the health port: the kubelet on the node, always admitted
    assert [p["namespaceSelector"]["matchLabels"] for p in by_port["grpc"]] == [{"embserve.io/client": "true"}]
    assert [p["namespaceSelector"]["matchLabels"] for p in by_port["metrics"]] == [{"kubernetes.io/metadata.name": "monitoring"}]


def test_the_explorer_is_off_and_the_http_port_asks_no_tokens_over_plaintext():
    flags = argv_flags(_server()["command"])
    assert "--explorer" not in flags
    assert "--allow-insecure-http" not in flags and "--tls-cert" in flags


# --- live: the container command, probed like the kubelet, scraped like the PodMonitor ------------

@pytest.mark.slow
def test_the_manifest_command_serves_probes_and_exposes_the_hpa_metric(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    [replica] = Cluster(tmp_path, hosts=("127.0.0.2",)).replicas
    replica.start([1])
    try:
        replica.wait_ready()
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe(f"{replica.host}:{replica.health_port}", probe_service(kind)[1])
        with urllib.request.urlopen(replica.metrics_url, timeout=10, context=replica.metrics_tls) as response:
            names = {s.name for f in text_string_to_metric_families(response.read().decode()) for s in f.samples}
        [rule] = _adapter_rules()
        assert rule["name"]["as"] in names
        assert replica.terminate() == 0  # SIGTERM drains and exits 0, within the grace period
    finally:
        replica.kill()
