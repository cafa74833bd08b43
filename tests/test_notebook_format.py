"""Every ``notebooks/NAME.py`` is a jupytext py:percent notebook that Jupyter opens as a notebook.

jupytext's contents manager opens a text file as a notebook by reading it with the format in
its header; these checks are what that needs: the header names the py:percent format of this
very file (and nothing else it could be paired with but an ``.ipynb``), the kernel is
``python3``, the file converts to a valid ``.ipynb`` and is in jupytext's canonical form (so
saving it from Jupyter leaves it unchanged).
"""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert any(p.stem == "tutorial_your_model" for p in NOTEBOOKS)
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_converts_and_is_paired_right(path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    from jupytext.formats import long_form_multiple_formats
    from jupytext.paired_paths import paired_paths

    text = path.read_text()
    nb = jupytext.reads(text, fmt="py:percent")
    meta = nb.metadata["jupytext"]
    assert meta["text_representation"]["extension"] == ".py"
    assert meta["text_representation"]["format_name"] == "percent"
    assert nb.metadata["kernelspec"]["name"] == "python3"

    formats = long_form_multiple_formats(meta["formats"])
    assert {"extension": ".py", "format_name": "percent"} in formats
    assert all(f["extension"] in (".py", ".ipynb") for f in formats), meta["formats"]
    # the pairing resolves to this file (no prefix/suffix sending Jupyter elsewhere)
    pairs = dict((f["extension"], p) for p, f in paired_paths(str(path), "py:percent", formats))
    assert pathlib.Path(pairs[".py"]) == path

    ipynb = jupytext.writes(nb, fmt="ipynb")
    converted = nbformat.reads(ipynb, as_version=4)
    nbformat.validate(converted)
    kinds = {c.cell_type for c in converted.cells}
    assert {"markdown", "code"} <= kinds
    assert converted.cells[0].cell_type == "markdown"
    body = jupytext.writes(nb, fmt="py:percent").split("# ---\n", 2)[2]
    assert body == text.split("# ---\n", 2)[2], "cells not in jupytext's canonical form"
