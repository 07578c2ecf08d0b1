"""The compact key index (keys.idx): against a dict, in bundles, in the registry and across workers."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, make_table, running_server
from embserve_client import Client
from embserve_format import keyfile, keyindex
from embserve_format.bundle import KEY_INDEX, MANIFEST, read_manifest, sha256_file
from embserve_server.tables import TableRegistry, load_table
from waiting import wait_for_line


def random_keys(n: int, seed: int) -> list[str]:
    """Distinct keys mixing ASCII, accented, CJK, emoji, spaces and odd controls (never a newline)."""
    rng = random.Random(seed)  # not numpy: its str arrays drop trailing NULs
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789 _-'.") + ["é", "ß", "日", "本", "語", "😀", "\x00", "\t", "\u2028", "\x1c"]
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choices(alphabet, k=rng.randint(1, 11))))
    return sorted(out)


def text_of(keys: list[str]) -> bytes:
    return ("\n".join(keys) + "\n").encode("utf-8")


def colliding_keys(base: str, count: int) -> list[str]:
    """ASCII keys with the same stored hash as ``base``: its little-endian integer plus multiples of P."""
    enc = base.encode()
    x, found, k = int.from_bytes(enc, "little"), [], 1
    while len(found) < count:
        y = x + k * keyindex._P
        k += 1
        raw = y.to_bytes(len(enc), "little")
        if all(0x21 <= c < 0x7F for c in raw):
            found.append(raw.decode())
    assert all(keyindex.key_hash(s.encode()) == keyindex.key_hash(enc) for s in found)
    return found


def check_against_dict(index: keyindex.KeyIndex, keys: list[str], probes: list[str]) -> None:
    truth = dict(zip(keys, range(len(keys))))
    want = [truth.get(k, -1) for k in probes]
    assert index.ids_for(probes).tolist() == want
    # A key holding a line break sends a batch one key at a time; without them it takes the
    # request-sized path (weight table, bucket windows, one comparison), over 64 KiB of keys the
    # general path (per-byte positions): the same answers.
    plain = [(k, w) for k, w in zip(probes, want) if "\n" not in k]
    keys_only, wanted = [k for k, _ in plain], [w for _, w in plain]
    assert index.ids_for(keys_only).tolist() == wanted
    copies = 1 + (1 << 16) // len("\n".join(keys_only).encode("utf-8", "surrogatepass"))
    assert index.ids_for(keys_only * copies).tolist() == wanted * copies
    assert [index.get(k, -1) for k in probes] == want
    assert [k in index for k in probes] == [w >= 0 for w in want]


def test_key_index_agrees_with_a_dict_on_random_and_unicode_keys() -> None:
    keys = random_keys(5000, seed=1)
    index = keyfile.build(text_of(keys))
    index.verify("test")
    absent = [k + "§" for k in keys[:300]] + ["", "x" * 500, "a\nb", "\ud800"]
    probes = keys[::3] + absent
    random.Random(2).shuffle(probes)
    check_against_dict(index, keys, probes)
    assert list(index.keys) == keys and index.keys[17] == keys[17] and index.keys[5:9].tolist() == keys[5:9]
    ids = np.array([[3, 4999], [0, 17]])
    assert index.keys[ids].tolist() == [[keys[3], keys[4999]], [keys[0], keys[17]]]
    with pytest.raises(KeyError):
        index["not a key"]


def test_keys_colliding_in_the_hash_are_told_apart() -> None:
    group = colliding_keys("collide!", 6)
    keys = ["collide!", *group[:4], *random_keys(200, seed=3)]
    index = keyfile.build(text_of(keys))
    index.verify("test")
    assert int((index.hashes[1:] == index.hashes[:-1]).sum()) >= 4  # the collisions are real
    # Batches (numpy path) and single keys, hits and colliding misses.
    probes = keys + group[4:] + ["collide?"]
    check_against_dict(index, keys, probes * 2)


def test_crowded_buckets_fall_back_to_a_binary_search() -> None:
    """A batch reads 8 hashes from each key's bucket; 12 keys of one hash overflow that window."""
    group = colliding_keys("crowded", 12)
    keys = [*group, *random_keys(3000, seed=5)]
    index = keyfile.build(text_of(keys))
    assert int(np.diff(index._bucket.astype(np.int64)).max()) > 8
    check_against_dict(index, keys, list(reversed(keys)) + ["crowded", "nope"])


def test_tables_smaller_than_a_bucket_window_answer_like_a_dict() -> None:
    for n in (1, 3, 7, 8, 9):
        keys = random_keys(n, seed=20 + n)
        check_against_dict(keyfile.build(text_of(keys)), keys, keys * 4 + ["nope", "zz", keys[0] + "x"] * 3)


def test_short_keys_spread_over_the_buckets_and_hash_1_files_still_load(tmp_path: Path) -> None:
    """Hash 2 mixes the bytes: keys of up to 3 bytes no longer all land in the first bucket.

    keys.idx files written with hash 1 (before the mixing constant) load and answer the same.
    """
    keys = random_keys(6000, seed=6)  # 1 to 11 characters: many of 3 bytes or fewer
    text = text_of(keys)
    mixed, plain = keyfile.build(text), keyfile.build(text, hash_id=1)
    assert mixed.hash_id == keyindex.HASH_ID == 2 and plain.hash_id == 1
    crowd = {i.hash_id: int(np.diff(i._bucket.astype(np.int64)).max()) for i in (mixed, plain)}
    assert crowd[2] <= 16 < crowd[1]
    (tmp_path / "keys.txt").write_bytes(text)
    keyfile.write(plain, tmp_path / "keys.idx")
    loaded = keyfile.load(tmp_path / "keys.txt", tmp_path / "keys.idx")
    assert loaded.hash_id == 1
    check_against_dict(loaded, keys, keys[::5] + ["nope", "é" * 3])


def test_written_index_maps_back_and_refuses_tampering(tmp_path: Path) -> None:
    keys = random_keys(3000, seed=4)
    (tmp_path / "keys.txt").write_bytes(text_of(keys))
    keyfile.write(keyfile.build(text_of(keys)), tmp_path / "keys.idx")
    loaded = keyfile.load(tmp_path / "keys.txt", tmp_path / "keys.idx")
    check_against_dict(loaded, keys, keys[::7] + ["nope"])
    # The index of another key order (same bytes, same offsets) disagrees with this keys.txt.
    swapped = keys[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    keyfile.write(keyfile.build(text_of(swapped)), tmp_path / "other.idx")
    with pytest.raises(keyindex.KeyIndexError, match="not to its own row|does not end|span"):
        keyfile.load(tmp_path / "keys.txt", tmp_path / "other.idx")
    (tmp_path / "dup.txt").write_bytes(text_of(["a", "b", "a"]))
    with pytest.raises(keyindex.KeyIndexError, match="duplicate key 'a' at rows 0 and 2"):
        keyfile.load(tmp_path / "dup.txt", None)


def _without_key_index(src: Path, dst: Path) -> None:
    """A copy of bundle ``src`` as bundles were written before keys.idx existed."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in (KEY_INDEX, MANIFEST):
            (dst / f.name).hardlink_to(f)
    manifest = json.loads((src / MANIFEST).read_text())
    del manifest["files"][KEY_INDEX]
    (dst / MANIFEST).write_text(json.dumps(manifest))


def test_old_bundles_without_key_index_load_and_answer_the_same(tmp_path: Path) -> None:
    new = make_table(tmp_path / "new", n=3000)
    assert KEY_INDEX in read_manifest(new)["files"]
    old = tmp_path / "old" / "t" / "1"
    _without_key_index(new, old)
    a, b = load_table(new), load_table(old)
    probes = [f"w{i}" for i in range(0, 3100, 3)] + ["", "w", "w01"]
    assert a.ids_for(probes).tolist() == b.ids_for(probes).tolist()
    assert a.ids_for(probes).tolist() == [int(k[1:]) if re.fullmatch(r"w(0|[1-9]\d*)", k) and int(k[1:]) < 3000 else -1 for k in probes]
    ids = np.arange(0, 3000, 11)
    assert a.index_to_key[ids].tolist() == b.index_to_key[ids].tolist() == [f"w{i}" for i in ids]
    with running_server(tmp_path / "old") as s_old, running_server(tmp_path / "new") as s_new:
        with Client(f"127.0.0.1:{s_old.port}") as co, Client(f"127.0.0.1:{s_new.port}") as cn:
            keys = [f"w{i}" for i in range(0, 3000, 97)]
            assert np.array_equal(co.lookup(keys).vectors, cn.lookup(keys).vectors)
            assert co.most_similar("w5", topn=10) == cn.most_similar("w5", topn=10)


def _tamper(path: Path, data: bytes, *, fix_checksum: bool) -> None:
    (path / KEY_INDEX).write_bytes(data)
    if fix_checksum:
        manifest = json.loads((path / MANIFEST).read_text())
        manifest["files"][KEY_INDEX] = sha256_file(path / KEY_INDEX)
        (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("fix_checksum", [True, False], ids=["disagrees-with-keys", "bad-checksum"])
def test_bad_key_index_is_refused_and_the_serving_version_stays(tmp_path: Path, fix_checksum: bool) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=2000)
    registry = TableRegistry(tables)
    registry.reload()
    assert registry.get("t").version == 1
    v2 = make_table(tables, n=2000, seed=1)
    keys = [f"w{i}" for i in range(2000)]
    keys[10], keys[11] = keys[11], keys[10]  # same lengths: only the mapping is wrong
    keyfile.write(keyfile.build(text_of(keys)), tmp_path / "wrong.idx")
    _tamper(v2, (tmp_path / "wrong.idx").read_bytes(), fix_checksum=fix_checksum)
    outcomes = registry.reload()
    assert [(o.outcome, o.version) for o in outcomes] == [("refused", 2)]
    assert ("maps to row" if fix_checksum else "sha256") in outcomes[0].message
    table = registry.get("t")
    assert table.version == 1 and table.key_to_index.get("w10") == 10


def test_two_workers_share_the_key_index_pages(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    path = make_table(tables, n=30_000, dim=8)
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = wait_for_line(proc, "with 2 workers")
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) with 2 workers \(pids (\d+), (\d+)\)", line)
        assert m, line
        port, pids = m.group(1), [int(m.group(2)), int(m.group(3))]
        wait_for_line(proc, "serving t v1")
        wait_for_line(proc, "serving t v1")
        keys = [f"w{i}" for i in range(30_000)]
        for _ in range(8):  # separate connections reach both workers
            with Client(f"127.0.0.1:{port}") as c:
                for start in range(0, 30_000, 5000):
                    assert c.lookup(keys[start : start + 5000]).found.all()
        idx_file = str(path / KEY_INDEX)
        for pid in pids:
            maps = _mappings(pid, idx_file)
            assert maps, f"worker {pid} does not map {idx_file}"
            # File-backed, never written: the pages stay shared with the page cache and the other worker.
            assert all(m["Private_Dirty"] == 0 and m["Anonymous"] == 0 for m in maps), maps
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0


def _mappings(pid: int, path: str) -> list[dict[str, int]]:
    """smaps entries (sizes in kB) of the mappings of ``path`` in process ``pid``."""
    out: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            current = {} if head.group(1) == path else None
            if current is not None:
                out.append(current)
        elif current is not None and (kv := re.match(r"^(\w+):\s+(\d+) kB", line)):
            current[kv.group(1)] = int(kv.group(2))
    return out
