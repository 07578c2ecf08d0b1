"""Sphinx configuration of the embserve manual (`make docs`).

The pages are Markdown (MyST); the reference pages read the docstrings as they are written (Sphinx
roles such as :func: and :class:, Google-style Args/Returns/Raises through napoleon), the argparse
parsers of the three console scripts and the comments of proto/embserve/v1/*.proto
(docs/_ext/embserve_docs.py). The code documented is this checkout's, not whatever is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This tree's distributions first (format/ exists once the numpy-only core has moved there).
for dist in ("trainer", "server", "index", "client", "format"):
    if (ROOT / dist).is_dir():
        sys.path.insert(0, str(ROOT / dist))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

project = "embserve"
author = "the embserve authors"
copyright = "2026, the embserve authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "embserve_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "requirements.txt"]

# GitHub-style anchors for headings down to ####, so [x](page.md#a-heading) links are checked.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# -n (nitpicky) checks every cross-reference into embserve's own packages; types from other
# libraries (numpy, grpc, the standard library) have no inventory here (no network at build time).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!embserve_).*"),
    (r"py:.*", r"embserve_client\.pb\..*"),
    # Private bases the public classes inherit from (shown by show-inheritance, not documented).
    (r"py:class", r"embserve_client\.(core|kv_queries)\..*"),
]

html_theme = "alabaster"
html_title = "embserve manual"
html_theme_options = {"description": "a gRPC server for maps of meaning", "page_width": "1100px"}
html_static_path: list[str] = []
html_copy_source = False
html_show_sourcelink = False
