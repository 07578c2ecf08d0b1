"""Past one host, on loopback: three embserve-server replicas behind one client target.

The replicas run the Deployment's container command (tests/loopback.py) on 127.0.0.2, 127.0.0.3 and
127.0.0.4 with the same port, like pods; the client's one target ``ipv4:...`` names all three and
gets round_robin with client-side health checks (client/embserve_client/channel.py). A few client
processes keep a bounded, paced load running while a replica is SIGKILLed and restarted and while
a new table version rolls out replica by replica: no call may fail, and reads of a client with
``monotonic_reads`` never go back to the old version. Calls per replica come from each replica's
own /metrics. Also here: the client's load-balancing choice, ``min_version`` and the server's
``--max-connection-age``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_table, running_server
from embserve_client import Client, InvalidArgumentError, UnavailableError
from embserve_client.channel import channel_options, resolves_to_many
from loopback import TABLE, Cluster, Load, VersionWatcher, cluster, publish
from waiting import wait_until

SPREAD = 0.25  # each replica's share of the calls within ±25% of an even share
LOAD_RATE = 60.0  # calls/s per client process: a bounded load on a shared 2-core box
CLIENTS = 3
RETURN_CALLS = 30  # calls a restarted replica must answer to count as "the load came back"
EVENT_TIMEOUT = 120.0  # upper bound of every wait below (they end at the event, well before)


# --- the client's choice of load balancing ---------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "many"),
    [
        ("dns:///embserve-headless.embserve.svc:50051", True),
        ("ipv4:127.0.0.2:5000,127.0.0.3:5000", True),
        ("ipv6:[::1]:5000,[::2]:5000", True),
        ("ipv4:127.0.0.2:5000", False),
        ("localhost:50051", False),
        ("10.0.0.1:50051", False),
    ],
)
def test_targets_that_resolve_to_several_addresses_get_round_robin(target, many):
    assert resolves_to_many(target) is many
    config = dict(channel_options(target, max_message_bytes=1 << 20))["grpc.service_config"]
    assert ('"round_robin"' in config) is many
    assert ('"healthCheckConfig": {"serviceName": ""}' in config) is many
    assert '"retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"]' in config  # + drain resets


def test_bad_load_balancing_and_min_version_are_refused():
    with pytest.raises(InvalidArgumentError, match="load_balancing: 'random'"):
        Client("localhost:1", load_balancing="random")
    with pytest.raises(InvalidArgumentError, match="min_version: 0"):
        Client("localhost:1", min_version=0)
    with pytest.raises(InvalidArgumentError, match="min_version: -2 for table 'glove'"):
        Client("localhost:1", min_version={"glove": -2})


# --- min_version against one real server ----------------------------------------------------------

def test_min_version_refuses_older_answers_and_accepts_the_floor(tmp_path):
    tables = tmp_path / "tables"
    publish(tables, 1)
    with running_server(tables) as server:
        target = f"127.0.0.1:{server.port}"
        with Client(target, min_version=1) as ok:
            assert ok.lookup(["w1"], table=TABLE).version == 1
        with Client(target, min_version={TABLE: 2}) as strict, pytest.raises(UnavailableError, match="below the floor 2"):
            strict.lookup(["w1"], table=TABLE)
        with Client(target, min_version={"other": 5}) as other:
            assert other.lookup(["w1"], table=TABLE).version == 1  # a floor for another table only


def test_a_read_naming_its_version_is_exempt_from_the_floor(tmp_path):
    # Version-addressed reads (an A/B pair, a snapshot) get the version they name, floor or not.
    tables = tmp_path / "tables"
    publish(tables, 1)
    publish(tables, 2)
    with running_server(tables, keep_versions=2) as server, \
            Client(f"127.0.0.1:{server.port}", min_version=2, monotonic_reads=True) as client:
        assert client.lookup(["w1"], table=TABLE).version == 2
        assert client.lookup(["w1"], table=TABLE, version=1).version == 1
        assert client.lookup(["w1"], table=TABLE).version == 2


def test_async_client_honours_min_version(tmp_path):
    from embserve_client import AsyncClient

    tables = tmp_path / "tables"
    publish(tables, 1)

    async def main(port: int) -> int:
        async with AsyncClient(f"127.0.0.1:{port}", min_version=2) as client:
            with pytest.raises(UnavailableError, match="below the floor 2"):
                await client.lookup(["w1"], table=TABLE)
        async with AsyncClient(f"127.0.0.1:{port}", monotonic_reads=True) as client:
            return (await client.lookup(["w1"], table=TABLE)).version

    with running_server(tables) as server:
        assert asyncio.run(main(server.port)) == 1


def test_monotonic_reads_never_go_back_across_replicas_at_different_versions(tmp_path):
    # Two real servers, one pinned to version 2 and one to version 1, behind one round-robin target:
    # a plain client sees both versions; a monotonic one, once it has seen 2, only ever 2.
    tables = tmp_path / "tables"
    publish(tables, 1)
    publish(tables, 2)
    with running_server(tables, pinned=((TABLE, 2),)) as new, running_server(tables, pinned=((TABLE, 1),)) as old:
        target = f"ipv4:127.0.0.1:{new.port},127.0.0.1:{old.port}"
        with Client(target) as plain:
            seen: set[int] = set()
            wait_until("both versions answer a plain client",
                       lambda: seen.add(plain.lookup(["w1"], table=TABLE).version) or seen == {1, 2}, timeout=EVENT_TIMEOUT, poll=0)
        with Client(target, monotonic_reads=True) as reader:
            wait_until("version 2 answers the reader", lambda: reader.lookup(["w1"], table=TABLE).version == 2, timeout=EVENT_TIMEOUT, poll=0)
            assert {reader.lookup(["w1"], table=TABLE).version for _ in range(40)} == {2}
            assert reader.list_tables()[0].version == 2  # ListTables answers obey the floor too


def test_round_robin_sends_nothing_to_a_replica_whose_health_says_not_serving(tmp_path):
    # Both servers could answer (their tables are loaded); only the client-side health check on
    # grpc.health.v1 keeps calls off the one that says NOT_SERVING (loading, draining), and its
    # health watch brings the replica back when it says SERVING again.
    tables = tmp_path / "tables"
    publish(tables, 1)
    publish(tables, 2)
    with running_server(tables, pinned=((TABLE, 2),)) as up, running_server(tables, pinned=((TABLE, 1),)) as draining:
        draining.set_serving(False)
        with Client(f"ipv4:127.0.0.1:{up.port},127.0.0.1:{draining.port}") as client:
            assert {client.lookup(["w1"], table=TABLE).version for _ in range(40)} == {2}
            draining.set_serving(True)
            wait_until("the replica back in rotation", lambda: client.lookup(["w1"], table=TABLE).version == 1,
                       timeout=EVENT_TIMEOUT, poll=0)


# --- --max-connection-age -------------------------------------------------------------------------

def _client_ports(server_port: int) -> set[int]:
    """Local ports of the established TCP connections to 127.0.0.1:server_port (/proc/net/tcp and
    tcp6: gRPC's sockets are dual-stack, so IPv4 peers show as ::ffff:127.0.0.1)."""
    ports = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            address, port = remote.rsplit(":", 1)
            if state == "01" and int(port, 16) == server_port and address.endswith("0100007F"):
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_max_connection_age_makes_clients_reconnect_without_failed_calls(tmp_path):
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    with running_server(tables, max_connection_age=0.5, grace_period=5.0) as server, Client(f"127.0.0.1:{server.port}") as client:
        client.lookup(["w1"], table="t")
        first = _client_ports(server.port)
        assert first, "no client connection seen"
        calls = 0

        def reconnected() -> bool:
            nonlocal calls
            client.lookup(["w1"], table="t")  # raises on any failed call
            calls += 1
            return bool(_client_ports(server.port) - first)

        wait_until("a new client connection after the maximum age", reconnected, timeout=EVENT_TIMEOUT, poll=0.05)
        assert calls >= 1


def test_max_connection_age_flag_reaches_grpc_and_refuses_nonsense(tmp_path):
    from embserve_server.app import grpc_options
    from embserve_server.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--tables", str(tmp_path), "--max-connection-age", "300", "--grace-period", "20"]))
    options = dict(grpc_options(config))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 20_000
    assert "grpc.max_connection_age_ms" not in dict(grpc_options(config_from_args(build_parser().parse_args(["--tables", str(tmp_path)]))))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "embserve-server"), "--tables", str(tmp_path), "--address", "127.0.0.1:0",
         "--max-connection-age", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "--max-connection-age: 0.0 must be a positive number of seconds" in result.stderr


# --- the loopback cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster"), versions=(1,)) as c:
        yield c


@pytest.mark.slow
def test_calls_spread_evenly_over_the_replicas(loop):
    with Load(loop.target, client=loop.client, clients=CLIENTS, rate=LOAD_RATE, max_seconds=EVENT_TIMEOUT) as load:
        wait_until("every replica answers", lambda: min(loop.lookups()) > 0, timeout=EVENT_TIMEOUT)
        before = loop.lookups()
        wait_until("600 more calls", lambda: sum(loop.lookups()) - sum(before) >= 600, timeout=EVENT_TIMEOUT)
        after = loop.lookups()
    assert sum(r.failed for r in load.reports) == 0, [r.errors for r in load.reports]
    share = [a - b for a, b in zip(after, before)]
    even = sum(share) / len(share)
    assert all(abs(s - even) <= SPREAD * even for s in share), f"calls per replica {share}, even share {even:.0f}"


@pytest.mark.slow
def test_a_replica_killed_and_restarted_mid_load_fails_no_call_and_gets_load_again(loop):
    victim = loop.replicas[1]
    with Load(loop.target, client=loop.client, clients=CLIENTS, rate=LOAD_RATE, max_seconds=EVENT_TIMEOUT * 2) as load:
        before = victim.lookups()  # this incarnation's count so far: wait for the new load itself
        wait_until("load on the victim", lambda: victim.lookups() >= before + RETURN_CALLS, timeout=EVENT_TIMEOUT)
        victim.kill()
        victim.start([1])
        victim.wait_ready()
        wait_until("load back on the restarted replica", lambda: victim.lookups() >= RETURN_CALLS, timeout=EVENT_TIMEOUT)
    assert sum(r.calls for r in load.reports) > 0
    assert sum(r.failed for r in load.reports) == 0, [r.errors for r in load.reports]


@pytest.mark.slow
def test_rolling_table_update_fails_no_call_and_never_goes_back(loop):
    with Load(loop.target, client=loop.client, clients=CLIENTS, monotonic=1, rate=LOAD_RATE, max_seconds=EVENT_TIMEOUT * 4) as load, \
            VersionWatcher(loop.replicas, max_seconds=EVENT_TIMEOUT * 4) as watch:
        before = loop.lookups()
        wait_until("load on every replica", lambda: min(a - b for a, b in zip(loop.lookups(), before)) >= RETURN_CALLS,
                   timeout=EVENT_TIMEOUT)
        wait_until("version 1 seen from every replica", lambda: all(watch.seen.values()), timeout=EVENT_TIMEOUT)
        for replica in loop.replicas:
            # The new pod's init container copies the new tables image: version 2.
            assert replica.terminate() == 0, replica.log_tail()
            replica.start([2])
            replica.wait_ready()
            wait_until(f"load on the updated {replica.host}", lambda r=replica: r.lookups() >= RETURN_CALLS, timeout=EVENT_TIMEOUT)
            wait_until(f"version 2 from {replica.host}", lambda r=replica: watch.seen[r.host][-1:] == [2], timeout=EVENT_TIMEOUT)
    assert sum(r.failed for r in load.reports) == 0, [r.errors for r in load.reports]
    assert watch.seen == {r.host: [1, 2] for r in loop.replicas}
    [reader] = load.monotonic_reports
    assert reader.versions == [1, 2] and reader.went_back == 0, reader
    for report in load.reports:
        assert report.versions[0] == 1 and report.versions[-1] == 2, report
