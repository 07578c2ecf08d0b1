"""Memory a table adds to a running server, against the bytes of its bundle files.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_memory.py --tables tables [--table glove]
        [--baseline-src DIR]   # a checkout (client/ server/ trainer/ index/) to measure side by side

The table's cost is isolated the way issue 14 defines it: peak RSS (VmHWM) of a server serving the
table minus peak RSS of the same server serving a 100-row slice of it, both after the same calls
(single-key and batch lookups, neighbour searches of keys present in both; for tables that embed
text, ``Embed`` of the same 256 texts). The runtime (Python, gRPC, FAISS, numpy: ~100 MiB; the
``tokenizers`` library for a tokenizer table, whose slice keeps a tokenizer of its first 100
tokens) cancels out. Keys are reported as resident bytes per key beyond the
key text: the key index file (mapped) over the key count, and the Rss of its mapping.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import harness as h
from embserve_client import Client
from embserve_format.bundle import KEY_INDEX, TOKENIZER, read_bundle, read_manifest

MiB = 2**20
ADDED_TARGET = 1.05  # added peak RSS <= 1.05 x the bundle files' bytes
KEY_BYTES_TARGET = 16  # resident bytes per key beyond the key text
SLICE_ROWS = 100


def make_slice(bundle: Path, into: Path) -> Path:
    """The first SLICE_ROWS rows of ``bundle`` as a table of the same name and kind (exact index).

    A tokenizer table's slice keeps a tokenizer (:func:`slice_tokenizer`), so that both servers
    load the same libraries and answer the same calls: what is left between them is the table.
    """
    from embserve_trainer.export import export_table

    b = read_bundle(bundle)
    extras: dict[str, Any] = {}
    files: dict[str, str] = {}
    sliced = slice_tokenizer(bundle, b.manifest)
    if sliced is not None:
        settings, text = sliced
        extras = {"tokenizer": settings}
        files = {TOKENIZER: text} if text else {}
    return export_table(into, b.name, b.vectors[:SLICE_ROWS], list(b.keys[:SLICE_ROWS]), source={"kind": "slice"}, metric=b.metric,
                        factory="Flat", extras=extras, files=files)


def slice_tokenizer(bundle: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """A WordPiece tokenizer.json of the bundle's first SLICE_ROWS tokens (same normalizer and
    pre-tokenizer) and its manifest settings; a word table's recorded word tokenizer with no file
    (text ""); None for bundles with neither (or a tokenizer.json of another model)."""
    if TOKENIZER not in manifest["files"]:
        words = (manifest.get("extras") or {}).get("tokenizer") or {}
        return (words, "") if "pattern" in words else None  # a word table: its recorded word tokenizer, no file
    spec = json.loads((bundle / TOKENIZER).read_text(encoding="utf-8"))
    if (spec.get("model") or {}).get("type") != "WordPiece" or spec["model"].get("unk_token") not in {
        t for t, i in spec["model"]["vocab"].items() if i < SLICE_ROWS
    }:
        print(f"# {TOKENIZER}: not a WordPiece vocabulary with its unknown token in the first {SLICE_ROWS} rows; the slice has no tokenizer")
        return None
    spec["model"]["vocab"] = {t: i for t, i in spec["model"]["vocab"].items() if i < SLICE_ROWS}
    spec["added_tokens"] = [t for t in spec.get("added_tokens") or [] if t["id"] < SLICE_ROWS]
    settings = dict((manifest.get("extras") or {}).get("tokenizer") or {})
    for field in ("special_ids", "unused_ids", "renamed_ids"):
        settings[field] = [i for i in settings.get(field) or [] if i < SLICE_ROWS]
    settings["vocab_size"] = SLICE_ROWS
    return settings, json.dumps(spec)


def serve_and_measure(tables: Path, keys: list[str], src: Path | None, texts: list[str] | None = None) -> dict[str, Any]:
    """Start a server on ``tables`` (code of the checkout ``src``, default the installed one), make
    the calls, return its peak RSS and the key index' mapping Rss."""
    with h.EmbserveProcess(tables, src=src) as server:
        server.wait_serving(timeout=600)
        with Client(server.target) as c:
            for _ in range(3):
                for k in keys:
                    c.lookup([k])
                    c.most_similar(k, topn=10)
                for _ in range(10):
                    c.lookup(keys)
                c.most_similar_batch(keys, topn=10)
                if texts:
                    c.embed(texts)  # text tables: the tokenizer's working memory counts too
        pid = server.proc.pid
        return {"hwm": h.status_kib(pid, "VmHWM") * 1024, "rss": h.status_kib(pid, "VmRSS") * 1024, "maps": mapped_rss(pid)}


def can_embed(bundle: Path) -> bool:
    """The table turns text into tokens (its own tokenizer.json, or a recorded word tokenizer)."""
    manifest = read_manifest(bundle)
    return TOKENIZER in manifest["files"] or "pattern" in ((manifest.get("extras") or {}).get("tokenizer") or {})


def mapped_rss(pid: int) -> dict[str, int]:
    """Rss bytes of each mapped file of the process (by base name)."""
    out: dict[str, int] = {}
    name = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            name = Path(head.group(1)).name if head.group(1).startswith("/") else None
        elif name and line.startswith("Rss:"):
            out[name] = out.get(name, 0) + int(line.split()[1]) * 1024
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="glove")
    p.add_argument("--baseline-src", type=Path, help="a checkout to measure the same way (e.g. main before the key index)")
    args = p.parse_args()
    bundle = h.newest_bundle(args.tables, args.table)
    files = {f: (bundle / f).stat().st_size for f in read_manifest(bundle)["files"]}
    file_bytes = sum(files.values())
    count = int(read_manifest(bundle)["count"])
    print(f"# {args.table}: {count} rows, bundle files {file_bytes / MiB:.1f} MiB ({', '.join(f'{k} {v / MiB:.1f}' for k, v in sorted(files.items()))}); {h.load_line()}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        full = h.isolate_table(args.tables, args.table, Path(tmp))
        small = Path(tmp) / "slice"
        small_bundle = make_slice(bundle, small)
        keys = list(read_bundle(small_bundle).keys)
        texts = [" ".join(keys[(i + j) % len(keys)] for j in range(12)) for i in range(256)]  # 256 texts of its own tokens
        sides: list[tuple[str, Path | None]] = [("embserve", None)]
        if args.baseline_src:
            sides.append(("baseline", args.baseline_src))
        rows = []
        for label, path in sides:
            got_full = serve_and_measure(full, keys, path, texts if can_embed(bundle) else None)
            got_small = serve_and_measure(small, keys, path, texts if can_embed(small_bundle) else None)
            added = got_full["hwm"] - got_small["hwm"]
            key_rss = got_full["maps"].get(KEY_INDEX, 0)
            print(f"{label}: peak RSS {got_full['hwm'] / MiB:.1f} MiB serving the table, {got_small['hwm'] / MiB:.1f} MiB serving "
                  f"{SLICE_ROWS} rows; added {added / MiB:.1f} MiB = {added / file_bytes:.3f}x the files (target <= {ADDED_TARGET}x); "
                  f"keys.idx mapped Rss {key_rss / count:.1f} B/key")
            rows.append({"side": label, "hwm": got_full["hwm"], "hwm_slice": got_small["hwm"], "added": added, "ratio": added / file_bytes,
                         "key_index_rss_per_key": key_rss / count})
    key_file = files.get(KEY_INDEX)
    if key_file is not None:
        print(f"keys: {key_file / count:.1f} bytes per key in {KEY_INDEX} beyond keys.txt (target <= {KEY_BYTES_TARGET})")
    h.write_json("memory", {"table": args.table, "file_bytes": file_bytes, "count": count, "rows": rows, "key_index_bytes": key_file})


if __name__ == "__main__":
    main()
