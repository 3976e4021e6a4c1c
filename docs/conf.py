"""Sphinx configuration of polystore's documentation site (``make docs``: warnings are errors).

Why Sphinx with MyST rather than MkDocs Material: the guides stay the Markdown files they are
(GitHub shows them, tests/test_docs.py runs their code blocks), MyST reads them as CommonMark
(the same parser the docs test uses), and the API reference comes from the docstrings through
autodoc and napoleon's Parameters / Returns / Raises sections, as in NumPy, SciPy, zarr and
napari's own documentation. ``-W`` turns every broken cross-reference, missing page, picture
or docstring markup error into a failure. MkDocs Material would need mkdocstrings for the same
reference, and has been in maintenance mode since late 2025.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the API reference documents this checkout, installed or not

project = "polystore"
author = "polystore contributors"
copyright = "polystore contributors, MIT licence"  # Sphinx's name for it

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/.*", "_generated/*.md"]  # _generated/*.md are included, not pages

# MyST: headings get anchors (guides link to "#sections"), and fences stay plain code blocks.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The API reference: signatures with their type hints in the text, members in source order,
# NumPy-style docstring sections.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = True
napoleon_use_rtype = False

# Every reference to polystore's own API must resolve (nitpicky); the standard library's and
# other projects' cannot be checked here (their inventories are on the network, which the
# build does not use), nor can private helpers that appear in signatures.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(os|collections|contextlib|multiprocessing|json|typing|pathlib|enum|numpy|np|filelock|zarr|"
               r"napari|pandas|roifile|torch)(\..*)?"),
    (r"py:func", r"open"),
    (r"py:.*", r".*\._[A-Za-z].*"),  # private names (polystore.base._BackendBase)
    # the ends a StreamingBackend composes, and their insides
    (r"py:class", r"polystore\.streaming\.(sender|receiver|inbox|producer|outgoing)\..*"),
    # the backend's parts
    (r"py:(class|func)", r"polystore\.backends\.zarr\.(location|plate|addresses|listing)\..*"),
    (r"py:.*", r"(Sender|PathInbox)(\..*)?"),
    (r"py:class", r"(dict|list|tuple)\[.*"),  # a piece of a generic type autodoc could not parse
]


# napoleon reads an attribute docstring's first line "Words: more" as "type: text" ("The plate
# writer: ..." became a type). Such docstrings are prose: they are kept as written, before
# napoleon (priority 500) and put back after it.
_prose: dict[str, list[str]] = {}


def _keep_prose(app: object, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    if what in ("attribute", "data", "property") and lines and ": " in lines[0]:
        _prose[name] = list(lines)


def _restore_prose(app: object, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    if name in _prose:
        lines[:] = _prose.pop(name)


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _keep_prose, priority=400)
    app.connect("autodoc-process-docstring", _restore_prose, priority=600)

html_theme = "furo"
html_title = "polystore"
html_static_path: list[str] = []


# The benchmarks page shows every figure benchmarks/figures/ holds (harness.save_figure writes
# them), with its table, and says which are still to be measured: a new run shows up without
# editing the page, and a missing figure never breaks the build.
BENCHMARKS = {
    "core": "Core: disk, batch loads, frameworks, memory (benchmarks/core.py)",
    "zarr": "Zarr plates (benchmarks/zarr.py)",
    "streaming": "Streaming between processes (benchmarks/streaming.py)",
    "napari_stream": "Streaming into napari (benchmarks/napari_stream.py)",
    "fiji_stream": "Streaming into Fiji (benchmarks/fiji_stream.py)",
}


def _benchmark_figures() -> str:
    figures = ROOT / "benchmarks" / "figures"
    parts = []
    for name, title in BENCHMARKS.items():
        parts.append(f"## {title}\n")
        if (figures / f"{name}.svg").is_file():
            # the path is relative to docs/reference/benchmarks.md, the page that includes this text
            parts.append(f"![{title}](../../benchmarks/figures/{name}.svg)\n")
            table = (figures / f"{name}.md").read_text(encoding="utf-8").split("\n", 2)[-1]
            parts.append(table)
        else:
            parts.append(f"**TBD by the final benchmark run**: `python benchmarks/{name}.py` draws it.\n")
    return "\n".join(parts)


_generated = Path(__file__).resolve().parent / "_generated"
_generated.mkdir(exist_ok=True)
(_generated / "benchmark-figures.md").write_text(_benchmark_figures(), encoding="utf-8")
