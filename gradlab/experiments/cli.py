"""The ``gradlab`` command: ``list``, ``reproduce`` and ``demo``.

Examples (shell)::

    gradlab list
    gradlab reproduce hessian_outliers
    gradlab reproduce stability_trace --smoke --out /tmp/runs --set seed=3
    gradlab reproduce --all --smoke
    gradlab demo
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _parse_sets(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _cmd_list(args: argparse.Namespace) -> int:
    from gradlab.experiments.registry import NAMES, get

    rows = []
    for name in NAMES:
        try:
            exp = get(name)
            rows.append((name, exp.title, f"arXiv:{exp.arxiv}", exp.cpu_time))
        except ImportError:
            rows.append((name, "(module not written yet)", "", ""))
    width = max(len(r[0]) for r in rows)
    id_width = max(len(r[2]) for r in rows)
    for name, title, arxiv, cpu in rows:
        print(f"{name.ljust(width)}  {arxiv.ljust(id_width)}  {cpu.ljust(8)}  {title}")
    return 0


def _reproduce_one(name, args, overrides, stream=sys.stdout):
    from gradlab.experiments.runner import format_checks, run_experiment

    mode = "smoke" if args.smoke else "full"
    print(f"== {name} ({mode} mode)", file=stream, flush=True)
    result = run_experiment(
        name,
        smoke=args.smoke,
        overrides=overrides,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress,
    )
    print(format_checks(result.checks), file=stream)
    print(f"wrote {result.run_dir} ({result.wall_time_s:.1f} s)", file=stream, flush=True)
    return result


def _cmd_reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from gradlab.experiments.registry import NAMES, get
    from gradlab.experiments.schema import load_config

    overrides = _parse_sets(args.set or [], parser)
    if args.all and args.name:
        parser.error("give either NAME or --all, not both")
    if not args.all and not args.name:
        parser.error(f"missing experiment NAME (or --all): expected one of {', '.join(NAMES)}")
    if args.all and overrides:
        parser.error("--set cannot be combined with --all (each experiment has its own keys)")
    names = list(NAMES) if args.all else [args.name]
    if args.name and args.name not in NAMES:
        parser.error(f"unknown experiment {args.name!r}: expected one of {', '.join(NAMES)}")
    if overrides:  # validate keys and types before any work starts
        try:
            load_config(get(names[0]), smoke=args.smoke, overrides=overrides)
        except (KeyError, ValueError, TypeError) as err:
            message = err.args[0] if isinstance(err, KeyError) else str(err)
            parser.error(message)

    summary = []
    for name in names:
        t0 = time.perf_counter()
        try:
            result = _reproduce_one(name, args, overrides)
            summary.append((name, "PASS" if result.passed else "FAIL", time.perf_counter() - t0))
        except KeyboardInterrupt:
            print(f"\ninterrupted: {name} left no run folder", file=sys.stderr)
            return 130
        except Exception as err:  # report and go on with --all; re-raise for one experiment
            if not args.all:
                raise
            print(f"ERROR in {name}: {type(err).__name__}: {err}", file=sys.stderr)
            summary.append((name, "ERROR", time.perf_counter() - t0))
    if args.all:
        width = max(len(n) for n in names)
        print("\n== summary")
        for name, status, wall in summary:
            print(f"{name.ljust(width)}  {status:5s}  {wall:7.1f} s")
        passed = sum(s == "PASS" for _, s, _ in summary)
        print(f"{passed}/{len(summary)} reproductions passed")
    return 0 if all(s == "PASS" for _, s, _ in summary) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from gradlab.experiments._demo import demo

    demo(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``gradlab`` command."""
    from gradlab._version import __version__

    parser = argparse.ArgumentParser(
        prog="gradlab",
        description="gradlab: reproduce curvature/NTK paper figures and run a curvature demo.",
    )
    parser.add_argument("--version", action="version", version=f"gradlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_list = sub.add_parser("list", help="list the reproductions")
    p_list.set_defaults(func=lambda a: _cmd_list(a))

    p_rep = sub.add_parser(
        "reproduce",
        help="run a reproduction and check its acceptance criteria",
        description="Run a reproduction, write OUT/NAME/<run-id>/{config.yaml, results.json, "
        "figure.png}, print the acceptance table; exit 0 only if every check passed.",
    )
    p_rep.add_argument("name", nargs="?", metavar="NAME", help="the reproduction to run")
    p_rep.add_argument("--all", action="store_true", help="run every reproduction in sequence")
    p_rep.add_argument("--smoke", action="store_true", help="small CI-sized setting")
    p_rep.add_argument("--out", default="runs", help="root folder of the runs (default ./runs)")
    p_rep.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value (repeatable), type-checked against the config schema",
    )
    p_rep.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p_rep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p_rep.set_defaults(func=lambda a: _cmd_reproduce(a, p_rep))

    p_demo = sub.add_parser("demo", help="top Hessian eigenvalues and trace of a small MLP")
    p_demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p_demo.set_defaults(func=lambda a: _cmd_demo(a))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradlab`` console script; returns the exit status.

    Examples:
        >>> from gradlab.experiments.cli import main
        >>> main(["list"])  # doctest: +SKIP
        hessian_outliers     arXiv:1706.04454  ~1 min    Empirical Analysis of the Hessian ...
        0
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
