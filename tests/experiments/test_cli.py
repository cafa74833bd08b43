"""The ``gradlab`` command end to end, through a subprocess like a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gradlab.experiments.registry import NAMES

# The end-to-end smoke run uses the cheapest reproduction; the notebooks test covers them all.
CHEAPEST = "mp_overtraining"
# Argument-error tests use a reproduction whose config keys they name.
KNOWN = "stability_trace"


def gradlab(*args, cwd=None, timeout=600):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "gradlab.experiments.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def test_version():
    import gradlab as gl

    out = gradlab("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"gradlab {gl.__version__}"


def test_list_shows_every_reproduction():
    out = gradlab("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(NAMES)
    by_name = {line.split()[0]: line for line in lines}
    assert "arXiv:1706.04454" in by_name["hessian_outliers"]
    assert "Empirical Analysis of the Hessian" in by_name["hessian_outliers"]
    assert "min" in by_name["hessian_outliers"]  # expected CPU time


def test_unknown_experiment_lists_valid_names():
    out = gradlab("reproduce", "hessian_outlier", "--smoke")
    assert out.returncode == 2
    assert "unknown experiment 'hessian_outlier'" in out.stderr
    for name in NAMES:
        assert name in out.stderr


def test_bad_set_key_lists_allowed_keys(tmp_path):
    out = gradlab("reproduce", KNOWN, "--smoke", "--set", "nonsense=3", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "unknown config key 'nonsense'" in out.stderr
    assert "allowed keys are seed," in out.stderr
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_bad_set_value_type(tmp_path):
    out = gradlab("reproduce", KNOWN, "--set", "num_steps=many", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "num_steps='many' must be an int" in out.stderr


def test_malformed_set_and_missing_name():
    assert "key=value" in gradlab("reproduce", KNOWN, "--set", "seed").stderr
    out = gradlab("reproduce")
    assert out.returncode == 2 and "missing experiment NAME" in out.stderr


def test_reproduce_smoke_end_to_end(tmp_path):
    out = gradlab("reproduce", CHEAPEST, "--smoke", "--no-progress", "--out", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = list((tmp_path / "runs" / CHEAPEST).iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-smoke")
    assert sorted(p.name for p in runs[0].iterdir()) == [
        "config.yaml",
        "figure.png",
        "results.json",
    ]
    record = json.loads((runs[0] / "results.json").read_text())
    assert record["passed"] is True and record["smoke"] is True
    # the acceptance table, one row per check, and the summary line
    assert "check" in out.stdout and "condition" in out.stdout
    for c in record["checks"]:
        assert c["name"] in out.stdout
    assert f"{len(record['checks'])}/{len(record['checks'])} checks passed" in out.stdout


@pytest.mark.parametrize(
    "argv", [["reproduce", "--all", "--set", "seed=1"], ["reproduce", KNOWN, "--all"]]
)
def test_all_flag_conflicts(argv):
    out = gradlab(*argv)
    assert out.returncode == 2


def test_demo_prints_eigenvalues_and_trace():
    out = gradlab("demo")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    eig_lines = [line for line in lines if line.strip().startswith("lambda_")]
    assert len(eig_lines) == 5
    values = [float(line.split("=")[1].split()[0]) for line in eig_lines]
    assert values == sorted(values, reverse=True) and values[0] > 0
    trace_line = next(line for line in lines if line.startswith("Hessian trace"))
    value, sem = (float(v) for v in trace_line.split(":")[1].split("+-"))
    assert sem > 0 and value > 0


def test_reproduce_all_prints_summary(monkeypatch, tmp_path, capsys):
    """--all runs every registered reproduction and summarises; exit 1 if any failed."""
    import dataclasses
    import types

    from gradlab.experiments import Experiment, check, cli
    from gradlab.experiments import registry as registry_module

    @dataclasses.dataclass(frozen=True)
    class Config:
        value: float = 2.0

    def make(name):
        return Experiment(
            name,
            "Toy",
            "0000.00000",
            "1 s",
            Config,
            run=lambda config, progress: {"value": config.value},
            checks=lambda config, r: [check("value", r["value"], ">=", 1.0)],
            plot=lambda config, r: None,
        )

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toy.yaml").write_text("value: 2.0\nsmoke:\n  value: 1.5\n")
    (configs / "toy_fail.yaml").write_text("value: 0.5\n")
    monkeypatch.setenv("GRADLAB_CONFIGS", str(configs))
    monkeypatch.setattr(registry_module, "NAMES", ("toy", "toy_fail"))
    for name in ("toy", "toy_fail"):
        module = types.ModuleType(f"gradlab.experiments.{name}")
        module.EXPERIMENT = make(name)
        monkeypatch.setitem(sys.modules, f"gradlab.experiments.{name}", module)
    status = cli.main(["reproduce", "--all", "--no-progress", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert status == 1
    assert "== summary" in out and "1/2 reproductions passed" in out
    summary = out.split("== summary")[1].splitlines()
    assert any(line.startswith("toy ") and "PASS" in line for line in summary)
    assert any(line.startswith("toy_fail") and "FAIL" in line for line in summary)
