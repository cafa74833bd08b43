"""The API reference renders every public name only if ``__all__`` is statically readable.

mkdocstrings (griffe) reads ``__all__`` without importing the package: a list built from other
lists (``[*_A_NAMES, *_B_NAMES]``) or extended with ``+=`` renders as an empty page, which is
what ``docs/api/transforms.md`` showed before. Every public subpackage therefore keeps one
literal list of strings, equal to the runtime ``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import gradlab

ROOT = pathlib.Path(gradlab.__file__).parent
SUBPACKAGES = sorted(
    p.parent.name for p in ROOT.glob("*/__init__.py") if not p.parent.name.startswith("_")
)


def _static_all(path: pathlib.Path) -> list[list[str] | None]:
    found = []
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            continue
        value = node.value
        literal = isinstance(node, ast.Assign) and isinstance(value, ast.List | ast.Tuple)
        if literal and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        ):
            found.append([e.value for e in value.elts])
        else:
            found.append(None)
    return found


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_all_is_one_literal_list(name):
    found = _static_all(ROOT / name / "__init__.py")
    assert len(found) == 1, f"gradlab.{name}: expected exactly one `__all__ = [...]`, got {found}"
    assert found[0] is not None, f"gradlab.{name}.__all__ must be a literal list of strings"
    module = importlib.import_module(f"gradlab.{name}")
    assert sorted(found[0]) == sorted(module.__all__)
    assert len(set(found[0])) == len(found[0]), f"gradlab.{name}.__all__ has duplicates"
