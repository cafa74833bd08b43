"""The tutorial notebook (``notebooks/tutorial_your_model.py``) runs end to end in smoke mode.

Executed as the reproduction notebooks are (``tests/experiments/test_notebooks.py``): converted
by jupytext, run by nbclient in a fresh kernel with ``GRADLAB_SMOKE=1`` and ``MPLBACKEND=Agg``.
Every analysis cell draws a figure; the run must raise no error.
"""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tutorial_runs_in_smoke_mode(monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")

    nb = jupytext.read(ROOT / "notebooks" / "tutorial_your_model.py")
    monkeypatch.setenv("GRADLAB_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # small models, compile-bound: XLA's optimisation passes cost more than they save (42 -> 28 s)
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "all converged: True" in text
    assert "test accuracy" in text
