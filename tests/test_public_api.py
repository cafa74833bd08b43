"""Contract checks on gradlab's public surface (DESIGN.md "Public API")."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

SUBPACKAGES = [
    "curvature",
    "spectral",
    "ntk",
    "transforms",
    "attribution",
    "landscape",
    "models",
    "data",
    "experiments",
]


def _public_names():
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"gradlab.{sub}")
        assert hasattr(module, "__all__"), f"gradlab.{sub} has no __all__"
        for name in module.__all__:
            yield sub, name


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_all_names_exist(sub):
    module = importlib.import_module(f"gradlab.{sub}")
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"gradlab.{sub}.__all__ lists names it does not define: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"


@pytest.mark.parametrize(("sub", "name"), list(_public_names()))
def test_public_name_has_docstring_with_example(sub, name):
    obj = getattr(importlib.import_module(f"gradlab.{sub}"), name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or callable(obj)):
        pytest.skip(f"{name} is a constant")
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"gradlab.{sub}.{name} has no docstring"
    assert "Examples:" in doc or "Example:" in doc, (
        f"gradlab.{sub}.{name}'s docstring has no Examples section"
    )


def test_import_is_light():
    code = (
        "import sys, gradlab\n"
        "heavy = [m for m in ('matplotlib', 'sklearn', 'gradlab.experiments', 'tqdm') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import gradlab pulled in: {out.stdout.strip()}"


def test_version():
    import gradlab

    assert isinstance(gradlab.__version__, str) and gradlab.__version__.count(".") >= 2


def test_no_private_jax_imports():
    """Only public JAX: no jax._src and no jax.core internals anywhere in the package."""
    import pathlib

    root = pathlib.Path(importlib.import_module("gradlab").__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for bad in ("jax._src", "from jax.core", "import jax.core", "jax.core."):
            if bad in text:
                offenders.append(f"{path.relative_to(root)}: {bad}")
    assert not offenders, offenders
