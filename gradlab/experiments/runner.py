"""Run a reproduction end to end and write its run folder atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gradlab.experiments.registry import get
from gradlab.experiments.schema import Check, load_config

__all__ = ["RunResult", "format_checks", "make_progress", "run_experiment", "to_jsonable"]


class RunResult(NamedTuple):
    """What :func:`run_experiment` returns.

    Attributes:
        config: the fully resolved config dataclass.
        results: the measurements returned by the experiment's ``run``.
        checks: the acceptance :class:`~gradlab.experiments.Check` list.
        passed: whether every check passed.
        run_dir: the run folder ``out/NAME/<run-id>`` (a :class:`pathlib.Path`).
        figure_path: ``run_dir / "figure.png"`` (``None`` if ``plot`` returned no figure).
        wall_time_s: wall time of ``run`` + ``checks`` + ``plot`` in seconds.

    Examples:
        >>> import pathlib
        >>> from gradlab.experiments import RunResult, check
        >>> r = RunResult(None, {}, [check("x", 1.0, ">=", 0.0)], True, pathlib.Path("runs"),
        ...               None, 0.1)
        >>> r.passed, r.checks[0].passed
        (True, True)
    """

    config: Any
    results: dict
    checks: list[Check]
    passed: bool
    run_dir: pathlib.Path
    figure_path: pathlib.Path | None
    wall_time_s: float


class _NullBar:
    def __init__(self, total: int | None = None, desc: str | None = None, **_: Any):
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def make_progress(enabled: bool = True):
    """Return the ``progress(total, desc=...)`` factory handed to an experiment's ``run``.

    With ``enabled=True`` it builds a :mod:`tqdm` bar on stderr; otherwise a silent bar with the
    same ``update``/context-manager interface.

    Examples:
        >>> from gradlab.experiments.runner import make_progress
        >>> with make_progress(False)(total=3, desc="widths") as bar:
        ...     bar.update()
        >>> bar.n
        1
    """
    if not enabled:
        return _NullBar

    from tqdm import tqdm

    def progress(total: int | None = None, desc: str | None = None, **kwargs: Any):
        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, **kwargs)

    return progress


def to_jsonable(obj: Any) -> Any:
    """Convert results to strict JSON: arrays to lists, tuples to lists, NaN/inf to ``None``.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.runner import to_jsonable
        >>> to_jsonable({"a": np.arange(2), "b": (1.5, float("nan"))})
        {'a': [0, 1], 'b': [1.5, None]}
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / jax arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON: {obj!r}")


def format_checks(checks: Sequence[Check]) -> str:
    """Render the acceptance table: one row per check, with value, condition and PASS/FAIL.

    Examples:
        >>> from gradlab.experiments import check, format_checks
        >>> print(format_checks([check("slope", 0.91, "in", (0.75, 1.25)),
        ...                      check("R^2", 0.42, ">=", 0.9)]))
        check  value   condition          result
        -----  ------  -----------------  ------
        slope  0.9100  in [0.75, 1.25]    PASS
        R^2    0.4200  >= 0.9             FAIL
        1/2 checks passed
    """
    rows = [("check", "value", "condition", "result")]
    for c in checks:
        if c.op == "in":
            lo, hi = c.threshold
            condition = f"in [{_num(lo)}, {_num(hi)}]"
        else:
            condition = f"{c.op} {_num(c.threshold)}"
        rows.append((c.name, _num4(c.value), condition, "PASS" if c.passed else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    widths[2] = max(widths[2], 17)
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"{sum(c.passed for c in checks)}/{len(checks)} checks passed")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:g}"


def _num4(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4f}"


def _git_commit() -> dict[str, Any]:
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str]:
    import jax
    import jaxlib
    import numpy

    import gradlab

    return {
        "gradlab": gradlab.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
    }


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a temp file in ``path``'s folder, fsync it, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_run_id(smoke: bool) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}{'-smoke' if smoke else ''}"


def run_experiment(
    name: str,
    *,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seed: int | None = None,
    out: str | os.PathLike = "runs",
    progress: bool = True,
) -> RunResult:
    """Run reproduction ``name`` and write ``out/NAME/<run-id>/{config.yaml, results.json, figure.png}``.

    The config is loaded with :func:`~gradlab.experiments.load_config` (``smoke`` block and
    ``overrides`` applied; ``seed`` overrides the ``seed`` field). The three files are first
    written into a hidden staging folder ``out/NAME/.<run-id>.partial`` (each via temp file +
    rename) and the folder is renamed to ``<run-id>`` only when all three exist. A run that
    raises (or is interrupted) removes its staging folder, so it never leaves a half-written
    ``results.json`` and never touches earlier runs. A run whose checks fail is still written
    (with ``passed: false``).

    ``results.json`` holds: ``experiment``, ``run_id``, ``smoke``, ``config``, ``results``,
    ``checks`` (name, value, op, threshold, passed), ``passed``, ``wall_time_s``,
    ``started_at``, ``versions`` (gradlab, jax, jaxlib, numpy, python) and ``git``
    (commit, dirty).

    Args:
        name: a name from :data:`gradlab.experiments.registry.NAMES`.
        smoke: the small CI setting declared in the config's ``smoke:`` block.
        overrides: ``{key: value}`` config overrides (strings are parsed as ``--set`` values).
        seed: overrides the config's ``seed``.
        out: the root folder of the runs.
        progress: show a tqdm progress bar over the experiment's sweep.

    Returns:
        A :class:`RunResult`.

    Examples:
        >>> import tempfile
        >>> from gradlab.experiments import run_experiment
        >>> result = run_experiment("stability_trace", smoke=True, progress=False,
        ...                         out=tempfile.mkdtemp())  # doctest: +SKIP
        >>> sorted(p.name for p in result.run_dir.iterdir())  # doctest: +SKIP
        ['config.yaml', 'figure.png', 'results.json']
    """
    import yaml

    experiment = get(name)
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = int(seed)
    config = load_config(experiment, smoke=smoke, overrides=overrides)
    config_dict = to_jsonable(dataclasses.asdict(config))

    run_id = _new_run_id(smoke)
    root = pathlib.Path(out) / name
    root.mkdir(parents=True, exist_ok=True)
    final_dir = root / run_id
    staging = root / f".{run_id}.partial"
    staging.mkdir()
    try:
        _write_atomic(
            staging / "config.yaml",
            yaml.safe_dump(config_dict, sort_keys=False).encode(),
        )
        started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        results = experiment.run(config, make_progress(progress))
        checks = list(experiment.checks(config, results))
        figure = experiment.plot(config, results)
        wall = time.perf_counter() - t0
        passed = bool(checks) and all(c.passed for c in checks)
        figure_path = None
        if figure is not None:
            import io

            buf = io.BytesIO()
            figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            _write_atomic(staging / "figure.png", buf.getvalue())
            figure_path = final_dir / "figure.png"
            with contextlib.suppress(Exception):
                import matplotlib.pyplot as plt

                plt.close(figure)
        record = {
            "experiment": name,
            "title": experiment.title,
            "arxiv": experiment.arxiv,
            "run_id": run_id,
            "smoke": smoke,
            "config": config_dict,
            "results": to_jsonable(results),
            "checks": [to_jsonable(c.to_dict()) for c in checks],
            "passed": passed,
            "wall_time_s": round(wall, 3),
            "started_at": started_at,
            "versions": _versions(),
            "git": _git_commit(),
        }
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        _write_atomic(staging / "results.json", text.encode())
        os.replace(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RunResult(config, results, checks, passed, final_dir, figure_path, wall)
