"""Token revocation without a restart: how long after the file changes is a removed token refused?

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_rotation.py [--interval 1] [--trials 10]

The real ``embserve-server`` (subprocess) with ``--auth-token-file`` in a Kubernetes Secret's
layout (tests/secret_volume.py) and ``--rotation-interval INTERVAL``. Two client threads call
without pause: one with token A, one with token B. Each trial removes A (one kubelet-style
``..data`` swap) and measures the time from the swap to A's first refusal, then puts A back and
waits until A is accepted again. Printed against the target: the slowest refusal within one
interval (plus 100 ms for the read and the call in flight), and no failed call for B.
"""

from __future__ import annotations

import argparse
import threading
import time

import harness as h
import numpy as np
from embserve_trainer.export import export_table
from secret_volume import SecretVolume

TOKEN_A, TOKEN_B = "bench-token-a-0123456789", "bench-token-b-0123456789"
SLACK = 0.1  # seconds beyond one interval: reading the file, the call in flight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=1.0, help="the server's --rotation-interval (seconds)")
    ap.add_argument("--trials", type=int, default=10)
    args = ap.parse_args()
    from embserve_client import AuthenticationError, Client, EmbserveError

    print(h.load_line(), "(start)")
    with h.tmpdir("embserve-rotation-") as tmp:
        rng = np.random.default_rng(0)
        export_table(tmp / "tables", "t", rng.normal(size=(1000, 16)).astype(np.float32), [f"w{i}" for i in range(1000)],
                     source={"kind": "bench", "seed": 0}, seed=0)
        volume = SecretVolume(tmp / "tokens")
        both = f"{TOKEN_A} read\n{TOKEN_B} read\n".encode()
        volume.write({"tokens": both})
        extra = ["--auth-token-file", str(volume.path("tokens")), "--rotation-interval", str(args.interval)]
        with h.EmbserveProcess(tmp / "tables", extra=extra) as server:
            server.wait_serving()
            stop = threading.Event()
            refused_at: list[float] = []  # A's refusals, monotonic times
            b_calls, b_failures = [0], [0]

            def call_a() -> None:
                with Client(server.target, token=TOKEN_A, timeout=10) as c:
                    while not stop.is_set():
                        try:
                            c.get_vector("w1")
                        except AuthenticationError:
                            refused_at.append(time.monotonic())

            def call_b() -> None:
                with Client(server.target, token=TOKEN_B, timeout=10) as c:
                    while not stop.is_set():
                        try:
                            c.get_vector("w2")
                        except EmbserveError:
                            b_failures[0] += 1
                        b_calls[0] += 1

            threads = [threading.Thread(target=f, daemon=True) for f in (call_a, call_b)]
            for t in threads:
                t.start()
            latencies = []
            for _ in range(args.trials):
                seen = len(refused_at)
                swapped = time.monotonic()
                volume.write({"tokens": f"{TOKEN_B} read\n".encode()})
                while len(refused_at) == seen:
                    time.sleep(0.001)
                latencies.append(refused_at[seen] - swapped)
                volume.write({"tokens": both})
                with Client(server.target, token=TOKEN_A, timeout=10) as probe:  # A accepted again before the next trial
                    while True:
                        try:
                            probe.get_vector("w1")
                            break
                        except AuthenticationError:
                            time.sleep(0.01)
                time.sleep(args.interval * float(np.random.default_rng(len(latencies)).random()))  # vary the phase
            stop.set()
            for t in threads:
                t.join(30)
    lat = np.array(latencies)
    target = args.interval + SLACK
    print(f"token revocation, --rotation-interval {args.interval:g} s, {args.trials} trials: swap -> first refusal "
          f"min {1e3 * lat.min():.0f} ms, median {1e3 * np.median(lat):.0f} ms, max {1e3 * lat.max():.0f} ms "
          f"(target max <= {1e3 * target:.0f} ms) {h.verdict(float(lat.max()), target, higher_is_better=False)}")
    print(f"other token: {b_calls[0]} calls, {b_failures[0]} failed (target 0) {h.verdict(b_failures[0], 0, higher_is_better=False)}")
    print(h.load_line(), "(end)")
    path = h.write_json("rotation", {"machine": h.machine(), "interval": args.interval, "latencies_s": latencies,
                                     "other_calls": b_calls[0], "other_failed": b_failures[0]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
