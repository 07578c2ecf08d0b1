"""Run a real Prometheus server against a metrics endpoint and read series back through its HTTP API.

Usage in a test::

    from prometheus_helper import require_prometheus, run_prometheus, wait_for_series

    def test_metrics_reach_prometheus(tmp_path, server):
        require_prometheus()
        with run_prometheus(f"127.0.0.1:{server.metrics_port}", tmp_path) as base_url:
            send_some_traffic(server)
            result = wait_for_series(base_url, 'embserve_requests_total{method="Lookup"}', timeout=30)

The Prometheus binary comes from the Debian package `prometheus` (scripts/system-deps.sh installs it).
Everything listens on 127.0.0.1 only. The standard library is enough: no HTTP client dependency.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from conftest import require_tool
from ports import free_port
from waiting import wait_until

# Named defaults: a 1 s scrape keeps tests short; start-up of an empty TSDB takes well under a second,
# the generous timeout covers a loaded CI machine.
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2
HTTP_TIMEOUT = 5.0
START_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """Prometheus could not be started, or its API answered with an error."""


def prometheus_binary() -> str | None:
    """Return the path of the `prometheus` executable, or None when it is not installed."""
    return shutil.which("prometheus")


def require_prometheus() -> str:
    """Return the `prometheus` executable's path; skip the calling test without it (fail in CI)."""
    return require_tool("prometheus", "Debian package `prometheus`, scripts/system-deps.sh")




def write_config(
    path: Path,
    scrape_target: str,
    *,
    job: str = "embserve",
    scrape_interval: str = SCRAPE_INTERVAL,
    rule_files: Sequence[Path] = (),
) -> Path:
    """Write a Prometheus config scraping `scrape_target` (host:port) every `scrape_interval`.

    JSON is valid YAML, so no YAML library is needed.
    """
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": job,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [scrape_target]}],
        }],
    }
    if rule_files:
        config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        # The API answers 400/422/503 with a JSON body that says what was wrong.
        body = exc.read().decode("utf-8", "replace")
        try:
            return json.loads(body)
        except ValueError:
            raise PrometheusError(f"GET {url}: HTTP {exc.code}: {body[:500]}") from exc


def _is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/-/ready", timeout=HTTP_TIMEOUT) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: Prometheus closes its TSDB and exits 0
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def run_prometheus(
    scrape_target: str,
    tmp_path: Path,
    *,
    job: str = "embserve",
    scrape_interval: str = SCRAPE_INTERVAL,
    rule_files: Sequence[Path] = (),
    ready_timeout: float = READY_TIMEOUT,
) -> Iterator[str]:
    """Run Prometheus on a free 127.0.0.1 port, scraping `scrape_target`, for the `with` block.

    Args:
        scrape_target: host:port of the metrics endpoint (path /metrics).
        tmp_path: directory for the config, the TSDB and prometheus.log.
        job: scrape job name (the `job` label of every scraped series).
        scrape_interval: scrape and rule evaluation interval.
        rule_files: rule files to load (e.g. deploy/prometheus-rules.yml) so their recordings can be queried.
        ready_timeout: seconds to wait for /-/ready.

    Returns:
        The base URL, e.g. "http://127.0.0.1:41234", for `query` and `wait_for_series`.

    Raises:
        PrometheusError: the binary is missing, or Prometheus exited or did not become ready in time;
            the message carries the end of its log.
    """
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError("the prometheus binary is not installed (Debian package `prometheus`)")
    workdir = Path(tmp_path) / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "prometheus.yml", scrape_target, job=job,
                          scrape_interval=scrape_interval, rule_files=rule_files)
    log_path = workdir / "prometheus.log"

    # The port is picked before Prometheus binds it, so another process may take it in between:
    # retry on a fresh port when Prometheus exits early.
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            log_tail = lambda path=log_path: f"end of {path}:\n{_log_tail(path)}"  # noqa: E731
            try:
                wait_until(f"prometheus on {base_url} ready", lambda url=base_url: _is_ready(url), ready_timeout,
                           poll=POLL_INTERVAL, proc=process, detail=log_tail)
            except AssertionError as exc:
                if process.poll() is not None and attempt < START_ATTEMPTS:
                    continue
                exited = f"exited with {process.returncode}" if process.poll() is not None else f"not ready after {ready_timeout:.0f}s"
                raise PrometheusError(f"prometheus on {base_url} {exited}; {log_tail()}") from exc
            # Ready is not enough: target discovery syncs a few seconds later, and until then nothing
            # is scraped. Waiting here gives callers a scrape loop that is already running.
            try:
                wait_until(f"an active scrape target {scrape_target!r}", lambda url=base_url: targets(url), ready_timeout,
                           poll=POLL_INTERVAL, proc=process)
            except AssertionError as exc:
                raise PrometheusError(f"prometheus on {base_url} has no active scrape target for {scrape_target!r} "
                                      f"after {ready_timeout:.0f}s; {log_tail()}") from exc
            yield base_url
            return
        finally:
            _stop(process)
    raise AssertionError("unreachable")  # pragma: no cover


def query(base_url: str, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
    """Evaluate an instant query through /api/v1/query.

    Args:
        base_url: as yielded by `run_prometheus`.
        promql: the expression.
        at: evaluation time (Unix seconds); now when None.

    Returns:
        The `data.result` list: for a vector, dicts with "metric" (labels) and "value" ([ts, "string"]).

    Raises:
        PrometheusError: the query failed (bad PromQL, timeout); the message carries Prometheus' error.
    """
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = _get_json(f"{base_url}/api/v1/query?{urllib.parse.urlencode(params)}")
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r}: {body.get('errorType')}: {body.get('error')}")
    result = body["data"]["result"]
    return result if isinstance(result, list) else [result]


def targets(base_url: str) -> list[dict[str, Any]]:
    """Return the active scrape targets (/api/v1/targets), with their `health` and `lastError`."""
    body = _get_json(f"{base_url}/api/v1/targets?state=active")
    return list(body.get("data", {}).get("activeTargets", []))


def wait_for_series(base_url: str, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll `query` until it returns a non-empty result, and return that result.

    Raises:
        TimeoutError: still empty after `timeout` seconds; the message says how the scrape targets fare.
        PrometheusError: the query itself is invalid.
    """
    try:
        return wait_until(f"series for {promql!r}", lambda: query(base_url, promql), timeout, poll=POLL_INTERVAL)
    except AssertionError as exc:
        scrape = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in targets(base_url)]
        raise TimeoutError(f"no series for {promql!r} after {timeout:.0f}s; targets: {scrape}") from exc


def sample_value(result: list[dict[str, Any]]) -> float:
    """The value of a one-sample instant-vector result, as a float."""
    if len(result) != 1:
        raise ValueError(f"expected exactly one sample, got {len(result)}: {result}")
    return float(result[0]["value"][1])
