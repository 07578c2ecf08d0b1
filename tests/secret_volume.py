"""A directory laid out and updated the way the kubelet lays out and updates a mounted Secret.

``..<timestamp>/tls.crt`` holds the files, ``..data`` links to that directory, and
``tls.crt -> ..data/tls.crt`` is the path a program is given. An update writes a new timestamped
directory, renames a new ``..data`` link over the old one (atomic) and deletes the old directory:
the given path never changes. Used by tests/processes/test_rotation.py and bench/bench_rotation.py.
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretVolume:
    """A mounted Secret's directory at ``root``; :meth:`write` is one kubelet update."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        new = self.root / f"..2026_12_06_02_00_00.{self.generation:04d}"
        new.mkdir()
        for name, data in files.items():
            (new / name).write_bytes(data)
        data_link = self.root / "..data"
        old = data_link.resolve() if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(new.name, tmp)
        os.rename(tmp, data_link)  # the atomic swap
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if old is not None:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
