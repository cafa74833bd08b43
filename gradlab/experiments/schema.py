"""The experiment contract: acceptance checks, the :class:`Experiment` record and config loading.

A reproduction is a module ``gradlab.experiments.NAME`` with a frozen dataclass ``Config``
(every knob and every acceptance threshold, full-mode values as defaults), ``run(config,
progress) -> dict``, ``checks(config, results) -> list[Check]`` and ``plot(config, results) ->
Figure``, bundled as ``EXPERIMENT = Experiment(...)``. Its YAML file ``configs/NAME.yaml``
repeats the full-mode values and holds a ``smoke:`` block of overrides for CI.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = ["Check", "Experiment", "check", "config_path", "load_config", "parse_value"]

Op = Literal["<=", ">=", "<", ">", "in"]
_OPS: tuple[str, ...] = typing.get_args(Op)


@dataclasses.dataclass(frozen=True)
class Check:
    """One acceptance check of a reproduction: ``value op threshold`` and whether it held.

    Attributes:
        name: what is checked, e.g. ``"outlier gap at i = C-1 (C=10)"``.
        value: the measured number (``nan`` if it could not be measured).
        op: one of ``"<="``, ``">="``, ``"<"``, ``">"``, ``"in"``.
        threshold: a number, or a closed interval ``(lo, hi)`` for ``"in"``.
        passed: whether the check held; always ``False`` for a NaN value.

    Examples:
        >>> from gradlab.experiments import Check
        >>> Check("ratio", 3.0, ">=", 2.0, True).passed
        True
    """

    name: str
    value: float
    op: str
    threshold: float | tuple[float, float]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The check as a JSON-ready dict (``threshold`` as a list for intervals)."""
        threshold = list(self.threshold) if isinstance(self.threshold, tuple) else self.threshold
        return {
            "name": self.name,
            "value": self.value,
            "op": self.op,
            "threshold": threshold,
            "passed": self.passed,
        }


def check(name: str, value: Any, op: Op, threshold: Any) -> Check:
    """Build a :class:`Check` by evaluating ``value op threshold``.

    ``op="in"`` takes a closed interval ``threshold=(lo, hi)`` and passes when
    ``lo <= value <= hi``. A NaN (or non-finite for ``"in"``) value never passes, so a run that
    diverged fails its checks instead of slipping through a comparison.

    Args:
        name: short description shown in the acceptance table.
        value: the measured number (Python, NumPy or JAX scalar).
        op: ``"<="``, ``">="``, ``"<"``, ``">"`` or ``"in"``.
        threshold: a number, or ``(lo, hi)`` for ``"in"``.

    Returns:
        The :class:`Check`, with ``value`` converted to a Python float.

    Raises:
        ValueError: for an unknown ``op`` or a malformed interval.

    Examples:
        >>> from gradlab.experiments import check
        >>> check("slope", 0.9, "in", (0.75, 1.25)).passed
        True
        >>> check("ratio", float("nan"), ">=", 2.0).passed
        False
        >>> check("error", 0.2, "<", 0.1)
        Check(name='error', value=0.2, op='<', threshold=0.1, passed=False)
    """
    if op not in _OPS:
        raise ValueError(
            f"op={op!r} is not a valid choice: expected one of {', '.join(map(repr, _OPS))}"
        )
    v = float(value)
    if op == "in":
        try:
            lo, hi = (float(t) for t in threshold)
        except (TypeError, ValueError):
            raise ValueError(
                f"threshold={threshold!r} is not an interval: op='in' expects (lo, hi)"
            ) from None
        if not lo <= hi:
            raise ValueError(f"threshold={threshold!r} is empty: expected lo <= hi")
        return Check(name, v, op, (lo, hi), bool(math.isfinite(v) and lo <= v <= hi))
    t = float(threshold)
    if math.isnan(v):
        passed = False
    else:
        passed = {"<=": v <= t, ">=": v >= t, "<": v < t, ">": v > t}[op]
    return Check(name, v, op, t, bool(passed))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A reproduction: metadata plus its config class and ``run``/``checks``/``plot`` functions.

    Attributes:
        name: registry name, also the config and notebook file stem.
        title: the paper's title.
        arxiv: the paper's arXiv id, e.g. ``"1706.04454"``.
        cpu_time: expected full-mode wall time on a 2-core CPU, e.g. ``"~3 min"``.
        config_cls: frozen dataclass with every knob; defaults are the full-mode values.
        run: ``run(config, progress) -> dict`` of JSON-serialisable measurements.
        checks: ``checks(config, results) -> list[Check]``.
        plot: ``plot(config, results) -> matplotlib.figure.Figure``.
        description: one line saying which claim is reproduced.

    Examples:
        >>> import dataclasses
        >>> from gradlab.experiments import Experiment, check
        >>> @dataclasses.dataclass(frozen=True)
        ... class Config:
        ...     seed: int = 0
        ...     min_value: float = 1.0
        >>> exp = Experiment(
        ...     name="toy", title="A toy", arxiv="0000.00000", cpu_time="1 s",
        ...     config_cls=Config, run=lambda config, progress: {"value": 2.0},
        ...     checks=lambda config, r: [check("value", r["value"], ">=", config.min_value)],
        ...     plot=lambda config, r: None, description="values are large")
        >>> exp.checks(Config(), exp.run(Config(), None))[0].passed
        True
    """

    name: str
    title: str
    arxiv: str
    cpu_time: str
    config_cls: type
    run: Callable[..., dict]
    checks: Callable[..., list]
    plot: Callable[..., Any]
    description: str = ""

    @property
    def url(self) -> str:
        """The arXiv abstract page of the paper."""
        return f"https://arxiv.org/abs/{self.arxiv}"


# ----------------------------------------------------------------------------- config loading


def _field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` (already parsed from YAML) against annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{name}={value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(
                f"{name}={value!r} is not a valid choice: expected one of "
                f"{', '.join(map(repr, choices))}"
            )
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]  # a single element given for a tuple field
        if not isinstance(value, list | tuple):
            raise TypeError(f"{name}={value!r} must be a list, expected {_type_name(tp)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{name}={value!r} must have {len(args)} elements ({_type_name(tp)})")
        if not args:
            return tuple(value)
        return tuple(
            _coerce(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be a bool (true/false)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"{name}={value!r} must be an int")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name}={value!r} must be a float")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{name}={value!r} must be a str")
        return value
    raise TypeError(f"{name}: unsupported config field type {_type_name(tp)}")


def parse_value(config_cls: type, key: str, text: str) -> Any:
    """Parse the string ``text`` of a ``--set key=text`` override into ``key``'s field type.

    The text is read as YAML (so ``3``, ``1e-3``, ``true``, ``[8, 16]`` work); a comma-separated
    list is accepted for tuple fields (``8,16,32``).

    Args:
        config_cls: the experiment's ``Config`` dataclass.
        key: the field name.
        text: the value as typed on the command line.

    Returns:
        The value converted to the field's type.

    Raises:
        KeyError: if ``key`` is not a field (the message lists the allowed keys).
        TypeError: if the value does not match the field's type.

    Examples:
        >>> import dataclasses
        >>> from gradlab.experiments.schema import parse_value
        >>> @dataclasses.dataclass(frozen=True)
        ... class Config:
        ...     widths: tuple[int, ...] = (32,)
        ...     lr: float = 0.1
        >>> parse_value(Config, "widths", "32,64"), parse_value(Config, "lr", "1e-2")
        ((32, 64), 0.01)
    """
    import yaml

    fields = _field_types(config_cls)
    if key not in fields:
        raise KeyError(_unknown_key_message(key, fields, "--set"))
    tp = fields[key]
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    if typing.get_origin(tp) is tuple and isinstance(value, str) and "," in value:
        value = [yaml.safe_load(part) for part in value.split(",") if part.strip()]
    if tp is str and not isinstance(value, str):
        value = text  # `--set name=123` for a str field means the string "123"
    if tp is float and isinstance(value, str):
        try:
            value = float(value)  # YAML reads "1e-3" (no dot) as a string
        except ValueError:
            pass
    return _coerce(key, value, tp)


def _unknown_key_message(key: str, fields: Mapping[str, Any], where: str) -> str:
    allowed = ", ".join(fields)
    return f"unknown config key {key!r} in {where}: allowed keys are {allowed}"


def config_path(name: str) -> pathlib.Path:
    """Locate ``configs/NAME.yaml``.

    Searched in order: ``$GRADLAB_CONFIGS/NAME.yaml``, ``./configs/NAME.yaml``, and the
    ``configs/`` folder next to the installed ``gradlab`` package (a source checkout).

    Examples:
        >>> import os, pathlib, tempfile
        >>> from gradlab.experiments.schema import config_path
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "toy.yaml").write_text("seed: 0\\n")
        >>> os.environ["GRADLAB_CONFIGS"] = str(folder)
        >>> config_path("toy") == folder / "toy.yaml"
        True
        >>> del os.environ["GRADLAB_CONFIGS"]
    """
    candidates = []
    if os.environ.get("GRADLAB_CONFIGS"):
        candidates.append(pathlib.Path(os.environ["GRADLAB_CONFIGS"]) / f"{name}.yaml")
    candidates.append(pathlib.Path.cwd() / "configs" / f"{name}.yaml")
    candidates.append(pathlib.Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"no config file for experiment {name!r}: searched {searched}")


def _check_mapping(data: Any, fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of config keys, got {type(data).__name__}")
    for key in data:
        if key not in fields:
            raise ValueError(_unknown_key_message(key, fields, where))
    return {k: _coerce(k, v, fields[k]) for k, v in data.items()}


def load_config(
    experiment: Experiment,
    *,
    smoke: bool = False,
    overrides: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
) -> Any:
    """Load an experiment's config: YAML full-mode values, then smoke overrides, then ``--set``.

    ``configs/NAME.yaml`` holds the top-level keys (fields of ``experiment.config_cls``, full
    mode) and an optional ``smoke:`` mapping applied with ``smoke=True``. ``overrides`` maps keys
    to strings (as given with ``--set key=value``, parsed with :func:`parse_value`) or to
    already-typed values. Fields missing from the file keep the dataclass defaults.

    Args:
        experiment: the :class:`Experiment`.
        smoke: apply the ``smoke:`` block.
        overrides: ``{key: value}`` applied last.
        path: the YAML file; default :func:`config_path` of ``experiment.name``.

    Returns:
        An instance of ``experiment.config_cls``.

    Raises:
        ValueError: an unknown key in the file or in ``overrides`` (the message names the key
            and lists the allowed ones), or a malformed file.
        TypeError: a value of the wrong type.

    Examples:
        >>> import dataclasses, pathlib, tempfile
        >>> from gradlab.experiments import Experiment, load_config
        >>> @dataclasses.dataclass(frozen=True)
        ... class Config:
        ...     seed: int = 0
        ...     steps: int = 1000
        ...     widths: tuple[int, ...] = (32, 64)
        >>> exp = Experiment("toy", "A toy", "0000.00000", "1 s", Config, None, None, None)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.yaml"
        >>> _ = path.write_text("seed: 0\\nsteps: 1000\\nsmoke:\\n  steps: 10\\n")
        >>> load_config(exp, smoke=True, overrides={"widths": "8,16"}, path=path)
        Config(seed=0, steps=10, widths=(8, 16))
        >>> load_config(exp, overrides={"step": "5"}, path=path)
        Traceback (most recent call last):
        ...
        ValueError: unknown config key 'step' in overrides: allowed keys are seed, steps, widths
    """
    import yaml

    cls = experiment.config_cls
    fields = _field_types(cls)
    file = pathlib.Path(path) if path is not None else config_path(experiment.name)
    with open(file) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a mapping of config keys, got {type(data).__name__}")
    data = dict(data)
    smoke_block = data.pop("smoke", None)
    values = _check_mapping(data, fields, str(file))
    if smoke:
        values.update(_check_mapping(smoke_block, fields, f"{file} (smoke block)"))
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(_unknown_key_message(key, fields, "overrides"))
        if isinstance(value, str) and fields[key] is not str:
            values[key] = parse_value(cls, key, value)
        else:
            values[key] = _coerce(key, value, fields[key])
    return cls(**values)
