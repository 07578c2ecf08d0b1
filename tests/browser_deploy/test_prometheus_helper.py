"""The Prometheus helper against a real Prometheus scraping a tiny prometheus_client endpoint on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_helper import (
    PrometheusError,
    query,
    require_prometheus,
    run_prometheus,
    sample_value,
    wait_for_series,
)

pytestmark = pytest.mark.slow  # real Prometheus processes: ~5 s each to discover their target


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[str, Counter]]:
    """A metrics endpoint on 127.0.0.1 (free port) exposing one counter from its own registry."""
    registry = CollectorRegistry()
    counter = Counter("helper_probe_events", "Events counted by the helper's test.", ["kind"], registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(probe, tmp_path_factory) -> Iterator[str]:
    """One Prometheus (job "probe") scraping `probe`, shared by the tests that only query it."""
    require_prometheus()
    target, _ = probe
    with run_prometheus(target, tmp_path_factory.mktemp("prom"), job="probe") as base_url:
        yield base_url


def test_counter_is_read_back_through_prometheus(probe, prometheus):
    target, counter = probe
    counter.labels(kind="a").inc(3)
    result = wait_for_series(prometheus, 'helper_probe_events_total{kind="a"} == 3', timeout=30)
    assert sample_value(result) == 3.0
    assert result[0]["metric"]["job"] == "probe"
    assert result[0]["metric"]["instance"] == target

    # A later scrape sees the new value: the helper reads live data, not the first sample.
    counter.labels(kind="a").inc(2)
    assert sample_value(wait_for_series(prometheus, 'helper_probe_events_total{kind="a"} == 5', timeout=30)) == 5.0

    assert query(prometheus, 'helper_probe_events_total{kind="absent"}') == []
    assert sample_value(query(prometheus, 'up{job="probe"}')) == 1.0


def test_bad_promql_raises_with_prometheus_message(prometheus):
    with pytest.raises(PrometheusError, match="bad_data"):
        query(prometheus, "sum by (")


def test_wait_for_series_times_out_and_names_the_target(probe, prometheus):
    target, _ = probe
    with pytest.raises(TimeoutError, match=target):
        wait_for_series(prometheus, "helper_probe_never_exported_total", timeout=1)


def test_prometheus_is_stopped_after_the_block(probe, tmp_path):
    require_prometheus()
    target, _ = probe
    with run_prometheus(target, tmp_path) as base_url:
        with urllib.request.urlopen(f"{base_url}/-/ready", timeout=5) as response:
            assert response.status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base_url}/-/ready", timeout=5)


def test_startup_failure_reports_the_log(tmp_path):
    require_prometheus()
    # A regular file where the TSDB directory should be: Prometheus cannot open storage and exits.
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "data").write_text("not a directory")
    with pytest.raises(PrometheusError, match=r"exited with .*prometheus\.log"):
        with run_prometheus("127.0.0.1:9", tmp_path, ready_timeout=10):
            pytest.fail("the block must not run when Prometheus did not start")
