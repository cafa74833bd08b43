"""transforms-B's rows for the contract suite; see ``_registry.py`` for the Row fields."""

from __future__ import annotations

from tests.transforms._row import Ctx, Row, per_example_grads, per_task_grads  # noqa: F401

ROWS_B: list[Row] = []
