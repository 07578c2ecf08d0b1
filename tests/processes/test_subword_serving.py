"""Missing-key policy "subword" end to end: fastText training -> bundle -> server -> client,
agreeing with gensim's FastText ``wv[word]`` for words the table has never seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL, planted_corpus, running_server
from embserve_client import Client, FailedPreconditionError
from embserve_trainer.export import export_table
from embserve_trainer.train import TrainConfig, train_table


def test_subword_policy_matches_gensim_fasttext(tmp_path: Path) -> None:
    trained = train_table([planted_corpus(tmp_path / "c.txt")], TrainConfig(model="fasttext", bucket=5_000, **SMALL))
    ngrams = trained.ngrams
    assert ngrams is not None
    tables = tmp_path / "tables"
    export_table(
        tables, "ft", trained.vectors, trained.keys, source=trained.source, extras=trained.extras,
        files={"ngrams.npy": lambda p: np.save(p, ngrams)},
    )
    export_table(tables, "plain", trained.vectors, trained.keys, source={})
    keys = ["kitten", "kittens", "purring"]
    assert "kittens" not in trained.keys and "purring" not in trained.keys
    with running_server(tables, default_table="ft") as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.table_info("ft").has_subwords and not c.table_info("plain").has_subwords
        got = c.lookup(keys, missing="subword")
        assert list(got.found) == [True, False, False]
        want = np.stack([trained.model.wv[k] for k in keys])
        np.testing.assert_allclose(got.vectors, want, rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(got.vectors[1]) > 0
        with pytest.raises(FailedPreconditionError, match="no subword n-grams"):
            c.lookup(keys, table="plain", missing="subword")
