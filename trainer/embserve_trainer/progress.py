"""Progress bars for long trainer steps (tqdm: count, rate and ETA on stderr)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A progress bar with rate and ETA; ``total=None`` shows count and rate only."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, mininterval=0.5, **kwargs)


def index_progress(total: int, desc: str) -> tqdm:
    """Adapter for ``embserve_index.build_index(progress=...)``."""
    return bar(total, desc, unit="vec")


def logs_above_bars() -> Any:
    """Context manager: console log lines are written above the open bars instead of breaking them."""
    return logging_redirect_tqdm()
