"""Config loading and acceptance-check semantics of gradlab.experiments.schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest

from gradlab.experiments import Check, Experiment, check, load_config
from gradlab.experiments.registry import NAMES, get
from gradlab.experiments.schema import config_path, parse_value


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0
    steps: int = 100
    lr: float = 0.1
    flag: bool = False
    name: str = "a"
    widths: tuple[int, ...] = (8, 16)
    interval: tuple[float, float] = (0.5, 1.5)


EXP = Experiment("toy", "Toy", "0000.00000", "1 s", Config, None, None, None)


def write(tmp_path, text):
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- check()


@pytest.mark.parametrize(
    ("value", "op", "threshold", "passed"),
    [
        (1.0, "<=", 1.0, True),
        (1.0, "<", 1.0, False),
        (1.0, ">=", 1.0, True),
        (1.0, ">", 1.0, False),
        (2.0, ">", 1.0, True),
        (0.5, "<", 1.0, True),
        (0.75, "in", (0.75, 1.25), True),
        (1.25, "in", (0.75, 1.25), True),
        (1.26, "in", (0.75, 1.25), False),
        (0.7, "in", (0.75, 1.25), False),
    ],
)
def test_check_ops(value, op, threshold, passed):
    c = check("x", value, op, threshold)
    assert isinstance(c, Check)
    assert c.passed is passed
    assert c.value == value and c.op == op


@pytest.mark.parametrize("op", ["<=", ">=", "<", ">"])
def test_check_nan_never_passes(op):
    assert check("x", float("nan"), op, 0.0).passed is False


def test_check_nan_and_inf_fail_interval():
    assert check("x", float("nan"), "in", (0, 1)).passed is False
    assert check("x", float("inf"), "in", (0, math.inf)).passed is False


def test_check_converts_arrays_to_float():
    import jax.numpy as jnp
    import numpy as np

    assert type(check("x", jnp.float32(2.0), ">", 1).value) is float
    assert check("x", np.int64(3), "<=", 3).passed


def test_check_rejects_bad_op_and_interval():
    with pytest.raises(ValueError, match="op='=='.*'<='"):
        check("x", 1.0, "==", 1.0)
    with pytest.raises(ValueError, match="interval"):
        check("x", 1.0, "in", 1.0)
    with pytest.raises(ValueError, match="empty"):
        check("x", 1.0, "in", (2.0, 1.0))


def test_check_to_dict_interval_as_list():
    d = check("x", 1.0, "in", (0, 2)).to_dict()
    assert d == {"name": "x", "value": 1.0, "op": "in", "threshold": [0.0, 2.0], "passed": True}


# ---------------------------------------------------------------- load_config()


def test_load_full_and_smoke(tmp_path):
    path = write(tmp_path, "seed: 1\nsteps: 1000\nwidths: [32, 64]\nsmoke:\n  steps: 10\n")
    full = load_config(EXP, path=path)
    assert full == Config(seed=1, steps=1000, widths=(32, 64))
    smoke = load_config(EXP, smoke=True, path=path)
    assert smoke.steps == 10 and smoke.seed == 1 and smoke.widths == (32, 64)


def test_unknown_key_in_file_names_key_and_allowed(tmp_path):
    path = write(tmp_path, "seed: 1\nstepz: 3\n")
    with pytest.raises(ValueError, match=r"'stepz'.*allowed keys are seed, steps, lr, flag"):
        load_config(EXP, path=path)


def test_unknown_key_in_smoke_block(tmp_path):
    path = write(tmp_path, "seed: 1\nsmoke:\n  nope: 3\n")
    load_config(EXP, path=path)  # the smoke block is only read with smoke=True
    with pytest.raises(ValueError, match=r"'nope'.*smoke block"):
        load_config(EXP, smoke=True, path=path)


def test_unknown_override_key(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'sed'.*allowed keys are seed"):
        load_config(EXP, overrides={"sed": "2"}, path=path)


def test_wrong_type_in_file(tmp_path):
    path = write(tmp_path, "steps: 1.5\n")
    with pytest.raises(TypeError, match="steps=1.5 must be an int"):
        load_config(EXP, path=path)
    path = write(tmp_path, "flag: 1\n")
    with pytest.raises(TypeError, match="flag=1 must be a bool"):
        load_config(EXP, path=path)


def test_file_must_be_a_mapping(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        load_config(EXP, path=write(tmp_path, "- 1\n- 2\n"))


def test_overrides_are_parsed_and_type_checked(tmp_path):
    path = write(tmp_path, "seed: 0\nsmoke:\n  steps: 10\n")
    config = load_config(
        EXP,
        smoke=True,
        overrides={
            "steps": "7",
            "lr": "1e-3",
            "flag": "true",
            "name": "123",
            "widths": "4,8,16",
            "interval": "[0, 2]",
        },
        path=path,
    )
    assert config == Config(
        steps=7, lr=1e-3, flag=True, name="123", widths=(4, 8, 16), interval=(0.0, 2.0)
    )
    assert type(config.lr) is float and type(config.interval[0]) is float
    with pytest.raises(TypeError, match="steps='ten' must be an int"):
        load_config(EXP, overrides={"steps": "ten"}, path=path)
    with pytest.raises(TypeError, match="flag"):
        load_config(EXP, overrides={"flag": "maybe"}, path=path)
    with pytest.raises(ValueError, match="2 elements"):
        load_config(EXP, overrides={"interval": "1,2,3"}, path=path)


def test_overrides_win_over_smoke_block(tmp_path):
    path = write(tmp_path, "steps: 100\nsmoke:\n  steps: 10\n")
    assert load_config(EXP, smoke=True, overrides={"steps": "5"}, path=path).steps == 5
    assert load_config(EXP, smoke=True, overrides={"steps": 6}, path=path).steps == 6


def test_parse_value_unknown_key():
    with pytest.raises(KeyError, match="allowed keys"):
        parse_value(Config, "bogus", "1")


def test_config_is_frozen(tmp_path):
    config = load_config(EXP, path=write(tmp_path, "seed: 0\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3


def test_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config file for experiment 'nosuch'"):
        config_path("nosuch")


# ---------------------------------------------------------------- registry and shipped configs


def test_registry_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*hessian_outliers"):
        get("nope")


AVAILABLE = [n for n in NAMES if importlib.util.find_spec(f"gradlab.experiments.{n}") is not None]


@pytest.mark.parametrize("name", AVAILABLE)
def test_shipped_config_matches_defaults_and_smoke_loads(name):
    """configs/NAME.yaml repeats the dataclass defaults (full mode) and its smoke block loads."""
    experiment = get(name)
    assert experiment.name == name and experiment.arxiv and experiment.title
    assert load_config(experiment) == experiment.config_cls()
    smoke = load_config(experiment, smoke=True)
    assert isinstance(smoke, experiment.config_cls)
