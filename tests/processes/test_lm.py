"""The next-token trainer: planted structure, snapshots as versions, serving, resume, curve, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import running_server
from embserve_client import Client
from embserve_format.bundle import list_versions, read_bundle
from embserve_trainer.cli import main
from embserve_trainer.corpus import corpus_sha256, resolve_corpus
from embserve_trainer.lm import learning_rate, train_nexttoken  # needs the [lm] extra (`make install`)
from embserve_trainer.lm_checkpoint import default_checkpoint, save_checkpoint
from embserve_trainer.lm_config import LMConfig
from waiting import wait_until

ANIMALS = ["cat", "dog", "kitten", "puppy", "rabbit", "mouse"]
VEHICLES = ["boat", "car", "ship", "truck", "bus", "train"]
# A tiny model on ~8k tokens: trains in a few seconds on one core.
SNAPSHOT_WAIT = 300.0  # seconds for the step-200 snapshot of a tiny LM on a busy 2-core box
TINY = ["--dim", "32", "--heads", "2", "--layers", "1", "--context", "8", "--batch", "16", "--min-count", "1",
        "--warmup", "20", "--seed", "3"]


def planted_corpus(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Animals and vehicles each fill their own slot; the two groups never share a sentence frame."""
    rng = np.random.default_rng(seed)
    pets = ["the {} sat on the mat", "a small {} drinks milk from the bowl", "my {} sleeps on the warm rug"]
    roads = ["the {} drove down the road", "a red {} needs fuel at the station", "my {} has an engine and wheels"]
    lines = []
    for _ in range(n):
        if rng.random() < 0.5:
            lines.append(pets[rng.integers(3)].format(ANIMALS[rng.integers(len(ANIMALS))]))
        else:
            lines.append(roads[rng.integers(3)].format(VEHICLES[rng.integers(len(VEHICLES))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def margin(path: Path) -> float:
    """Mean cosine within the animals minus mean cosine between animals and vehicles."""
    b = read_bundle(path)
    row = {k: i for i, k in enumerate(b.keys)}
    a, v = unit(b.vectors[[row[w] for w in ANIMALS]]), unit(b.vectors[[row[w] for w in VEHICLES]])
    within = (a @ a.T)[~np.eye(len(ANIMALS), dtype=bool)].mean()
    return float(within - (a @ v.T).mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny run with a snapshot every 40 steps: (tables dir, final bundle)."""
    root = tmp_path_factory.mktemp("lm")
    corpus = planted_corpus(root / "planted.txt")
    config = LMConfig(dim=32, heads=2, layers=1, context=8, batch=16, epochs=8, min_count=1, warmup_steps=20, seed=3)
    final = train_nexttoken([corpus], config, tables=root / "tables", name="planted", snapshot_every=40)
    return root / "tables", final


def test_loss_falls_and_planted_words_come_together(trained: tuple[Path, Path]) -> None:
    tables, final = trained
    first = read_bundle(tables / "planted" / "1")
    assert first.manifest["source"]["training"]["step"] == 0  # the table at initialisation
    history = read_bundle(final).manifest["source"]["training"]["history"]
    losses = [h["train_loss"] for h in history if h["train_loss"] is not None]
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["heldout_perplexity"] < 0.2 * history[0]["heldout_perplexity"]
    assert margin(final) > margin(first.path) + 0.3


def test_snapshots_are_versions_with_monotone_steps(trained: tuple[Path, Path]) -> None:
    tables, final = trained
    versions = list_versions(tables, "planted")
    assert len(versions) >= 4 and final.name == str(versions[-1])
    steps, seen = [], []
    for v in versions:
        b = read_bundle(tables / "planted" / str(v))
        t = b.manifest["source"]["training"]
        assert t["snapshot"] is (v != versions[-1]) and t["final"] is (v == versions[-1])
        assert isinstance(t["heldout_perplexity"], float) and t["heldout_perplexity"] > 1
        assert b.file("eval.json") is not None and b.file("counts.npy") is not None
        assert b.manifest["source"]["input_sha256"] and b.manifest["source"]["libraries"]["torch"].startswith("2.13.0")
        steps.append(t["step"])
        seen.append(t["tokens_seen"])
    assert steps == sorted(set(steps)) and seen == sorted(set(seen)) and steps[0] == 0
    assert all(s % 40 == 0 for s in steps[:-1])


def test_bundle_is_served(trained: tuple[Path, Path]) -> None:
    tables, final = trained
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as client:
        neighbours = client.most_similar("cat", topn=3, table="planted")
        assert {n.key for n in neighbours} <= set(ANIMALS)
        vector = client.get_vector("kitten", table="planted")
    np.testing.assert_array_equal(vector, read_bundle(final).vectors[read_bundle(final).keys.index("kitten")])


def test_curve_draws_the_snapshots(trained: tuple[Path, Path], tmp_path: Path) -> None:
    tables, _ = trained
    out = tmp_path / "curve.png"
    assert main(["curve", "planted", "--tables", str(tables), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["curve", "nosuch", "--tables", str(tables), "--out", str(out)]) == 2


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "embserve_trainer.cli", "train", "--model", "nexttoken", *args]


@pytest.mark.timeout(1200)  # three trainer runs (whole, interrupted, resumed): each may take minutes on a busy box
def test_resume_gives_the_uninterrupted_table(tmp_path: Path) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt"))
    common = [*TINY, "--corpus", corpus, "--epochs", "25", "--snapshot-every", "200", "--no-eval", "--name", "t"]
    whole = subprocess.run(cli(*common, "--tables", str(tmp_path / "a")), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    tables = tmp_path / "b"
    proc = subprocess.Popen(cli(*common, "--tables", str(tables)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("the step-200 snapshot", lambda: len(list_versions(tables, "t")) >= 2, SNAPSHOT_WAIT, poll=0.01, proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and (tables / ".checkpoints" / "t.pt").is_file()
    assert not any(read_bundle(tables / "t" / str(v)).manifest["source"]["training"]["final"]
                   for v in list_versions(tables, "t"))
    resumed = subprocess.run(cli(*common, "--tables", str(tables), "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = read_bundle(Path(whole.stdout.strip()))
    b = read_bundle(Path(resumed.stdout.strip()))
    assert a.manifest["source"]["training"]["step"] == b.manifest["source"]["training"]["step"]
    assert np.asarray(a.vectors).tobytes() == np.asarray(b.vectors).tobytes()
    assert not (tables / ".checkpoints" / "t.pt").exists()


def test_sigterm_writes_a_checkpoint_and_publishes_no_final_table(tmp_path: Path) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt"))
    tables = tmp_path / "t"
    proc = subprocess.Popen(cli(*TINY, "--corpus", corpus, "--epochs", "25", "--snapshot-every", "200", "--no-eval",
                                "--name", "t", "--tables", str(tables)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("the step-200 snapshot", lambda: len(list_versions(tables, "t")) >= 2, SNAPSHOT_WAIT, poll=0.01, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and out == "", err[-2000:]
    assert "SIGTERM received" in err and (tables / ".checkpoints" / "t.pt").is_file()
    assert not list(tables.glob(".checkpoints/.*.tmp"))  # the atomic write left no temporary file


def test_resume_refuses_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt", n=100))
    args = ["train", "--model", "nexttoken", *TINY, "--corpus", corpus, "--tables", str(tmp_path / "t"), "--name", "t"]
    assert main([*args, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # a checkpoint of the same run but another --lr is refused, naming the flag
    tiny = LMConfig(dim=32, heads=2, layers=1, context=8, batch=16, min_count=1, warmup_steps=20, seed=3, lr=0.5)
    parameters = {k: v for k, v in asdict(tiny).items() if k != "device"}
    digest, _ = corpus_sha256(resolve_corpus([Path(corpus)]))
    save_checkpoint(default_checkpoint(tmp_path / "t", "t"), {"parameters": parameters, "corpus_sha256": digest, "step": 0})
    assert main([*args, "--resume"]) == 2
    assert "--lr is 0.003 but the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["0", "-5"])
def test_bad_snapshot_interval(tmp_path: Path, interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt", n=50))
    rc = main(["train", "--model", "nexttoken", *TINY, "--corpus", corpus, "--tables", str(tmp_path / "t"),
               "--name", "t", "--snapshot-every", interval])
    assert rc == 2
    assert "--snapshot-every" in capsys.readouterr().err
    assert list_versions(tmp_path / "t", "t") == []


def test_corpus_too_small_for_the_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the cat sat on the mat\n" * 3, encoding="utf-8")
    rc = main(["train", "--model", "nexttoken", *TINY, "--context", "64", "--corpus", str(corpus),
               "--tables", str(tmp_path / "t"), "--name", "t"])
    err = capsys.readouterr().err
    assert rc == 2 and "--context 64" in err and str(corpus) in err
    assert list_versions(tmp_path / "t", "t") == []


def test_unwritable_tables_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt", n=50))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    rc = main(["train", "--model", "nexttoken", *TINY, "--corpus", corpus, "--tables", str(blocker / "tables"),
               "--name", "t"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tables" in err and str(blocker / "tables") in err


# torch "not installed": a finder that refuses it. (None in sys.modules would break scipy, which
# probes sys.modules["torch"] for array-API support.)
HIDE_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def test_without_torch_says_how_to_install_and_writes_nothing(tmp_path: Path) -> None:
    corpus = str(planted_corpus(tmp_path / "planted.txt", n=50))
    tables = tmp_path / "t"
    code = HIDE_TORCH + (
        "from embserve_trainer.cli import main\n"
        f"sys.exit(main(['train', '--model', 'nexttoken', '--corpus', {corpus!r}, '--tables', {str(tables)!r}, "
        "'--name', 't']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install './trainer[lm]'" in proc.stderr and "torch==2.13.0" in proc.stderr
    assert not tables.exists()


def test_torch_is_imported_only_by_the_lm_modules() -> None:
    code = ("import sys, embserve_trainer.cli, embserve_trainer.export, embserve_trainer.curve, embserve_trainer.lm_config, "
            "embserve_client, "
            "embserve_server.app; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tied_table_is_the_output_rows(tmp_path: Path) -> None:
    corpus = planted_corpus(tmp_path / "planted.txt", n=300)
    config = LMConfig(dim=32, heads=2, layers=1, context=8, batch=16, epochs=4, min_count=1, warmup_steps=10,
                      seed=3, tied=True, cutoffs=(8, 20))  # cutoffs inside the tiny vocabulary: adaptive softmax
    final = train_nexttoken([corpus], config, tables=tmp_path / "t", name="tied", snapshot_every=None)
    source = read_bundle(final).manifest["source"]
    assert source["architecture"]["tied_embeddings"] is True
    assert source["architecture"]["head"] == "AdaptiveLogSoftmaxWithLoss"
    assert source["training"]["heldout_perplexity"] < 10


def test_learning_rate_schedule() -> None:
    config = LMConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(config, 0, 100) == pytest.approx(1e-4)
    assert learning_rate(config, 9, 100) == pytest.approx(1e-3)
    assert learning_rate(config, 100, 100) == pytest.approx(1e-4)
    values = [learning_rate(config, s, 100) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)
