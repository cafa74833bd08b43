"""run_experiment: the run folder, atomic writes, failure handling; format_checks."""

from __future__ import annotations

import dataclasses
import json
import math
import types

import pytest
import yaml

from gradlab.experiments import check, format_checks, run_experiment
from gradlab.experiments import registry as registry_module
from gradlab.experiments.runner import to_jsonable
from gradlab.experiments.schema import Experiment


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    value: float = 2.0
    threshold: float = 1.0
    fail: bool = False


def _run(config, progress):
    with progress(total=2, desc="toy") as bar:
        bar.update()
        if config.fail:
            raise RuntimeError("boom")
        bar.update()
    return {"value": config.value, "seed": config.seed, "nan": float("nan")}


def _checks(config, results):
    return [check("value", results["value"], ">=", config.threshold)]


def _plot(config, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, results["value"]])
    return fig


TOY = Experiment("toy", "Toy paper", "0000.00000", "1 s", Config, _run, _checks, _plot, "toy")


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """Register a toy experiment whose config lives in tmp_path/configs."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toy.yaml").write_text("seed: 0\nvalue: 2.0\nsmoke:\n  value: 1.5\n")
    monkeypatch.setenv("GRADLAB_CONFIGS", str(configs))
    monkeypatch.setattr(registry_module, "NAMES", (*registry_module.NAMES, "toy"))
    module = types.ModuleType("gradlab.experiments.toy")
    module.EXPERIMENT = TOY
    monkeypatch.setitem(__import__("sys").modules, "gradlab.experiments.toy", module)
    return tmp_path / "runs"


def test_run_writes_three_files(toy):
    result = run_experiment("toy", smoke=True, seed=7, out=toy, progress=False)
    assert result.passed and result.config.value == 1.5 and result.config.seed == 7
    assert result.run_dir.parent == toy / "toy"
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "config.yaml",
        "figure.png",
        "results.json",
    ]
    assert result.figure_path == result.run_dir / "figure.png"
    assert result.figure_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((result.run_dir / "results.json").read_text())
    assert record["experiment"] == "toy" and record["smoke"] is True
    assert record["results"] == {"value": 1.5, "seed": 7, "nan": None}  # strict JSON
    assert record["checks"] == [
        {"name": "value", "value": 1.5, "op": ">=", "threshold": 1.0, "passed": True}
    ]
    assert record["passed"] is True
    assert {"gradlab", "jax", "jaxlib"} <= set(record["versions"])
    assert "commit" in record["git"]
    assert record["wall_time_s"] >= 0
    resolved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert resolved == {"seed": 7, "value": 1.5, "threshold": 1.0, "fail": False}
    # no temporary files are left behind
    assert not [p for p in (toy / "toy").iterdir() if p.name.startswith(".")]


def test_failed_check_is_still_recorded(toy):
    result = run_experiment("toy", overrides={"threshold": "3"}, out=toy, progress=False)
    assert not result.passed
    record = json.loads((result.run_dir / "results.json").read_text())
    assert record["passed"] is False and record["checks"][0]["passed"] is False


def test_failing_run_leaves_nothing_and_keeps_earlier_runs(toy):
    first = run_experiment("toy", out=toy, progress=False)
    before = {p: p.read_bytes() for p in first.run_dir.iterdir()}
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment("toy", overrides={"fail": "true"}, out=toy, progress=False)
    runs = list((toy / "toy").iterdir())
    assert runs == [first.run_dir]  # no staging folder, no second run folder
    assert {p: p.read_bytes() for p in first.run_dir.iterdir()} == before


def test_interrupt_during_write_leaves_no_results(toy, monkeypatch):
    from gradlab.experiments import runner

    real = runner._write_atomic

    def flaky(path, data):
        if path.name == "results.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(runner, "_write_atomic", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("toy", out=toy, progress=False)
    assert list((toy / "toy").iterdir()) == []


def test_two_runs_get_distinct_folders(toy):
    a = run_experiment("toy", out=toy, progress=False)
    b = run_experiment("toy", out=toy, progress=False)
    assert a.run_dir != b.run_dir and a.run_dir.exists() and b.run_dir.exists()


def test_bad_override_fails_before_running(toy):
    with pytest.raises(ValueError, match="allowed keys are seed, value, threshold, fail"):
        run_experiment("toy", overrides={"valu": "1"}, out=toy, progress=False)
    assert not (toy / "toy").exists() or not list((toy / "toy").iterdir())


def test_format_checks_table():
    table = format_checks([check("slope", 0.91, "in", (0.75, 1.25)), check("R^2", 0.5, ">=", 0.9)])
    lines = table.splitlines()
    assert lines[0].split() == ["check", "value", "condition", "result"]
    assert "in [0.75, 1.25]" in lines[2] and lines[2].rstrip().endswith("PASS")
    assert ">= 0.9" in lines[3] and lines[3].rstrip().endswith("FAIL")
    assert lines[-1] == "1/2 checks passed"
    assert "nan" in format_checks([check("x", float("nan"), "<", 1)])


def test_to_jsonable():
    import jax.numpy as jnp
    import numpy as np

    out = to_jsonable({"a": jnp.arange(3), 1: (np.float32(0.5), math.inf), "c": [True, None]})
    assert out == {"a": [0, 1, 2], "1": [0.5, None], "c": [True, None]}
    json.dumps(out, allow_nan=False)
    with pytest.raises(TypeError, match="cannot serialise"):
        to_jsonable({"x": object()})
