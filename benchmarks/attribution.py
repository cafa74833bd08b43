"""The attribution benchmarks of issue 13, in one command.

    python -m benchmarks.attribution [--quick]

Runs :mod:`benchmarks.attribution_grads` (per-example gradients: time per example vs a Python
loop of single-example gradients, peak memory chunked vs unchunked) and
:mod:`benchmarks.attribution_influence` (influence solvers CG / Arnoldi / EK-FAC, and the LDS
table on digits), prints one JSON document and the LDS table in Markdown.
"""

from __future__ import annotations

import argparse

from benchmarks import attribution_grads, attribution_influence
from benchmarks._workloads import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster smoke run")
    args = parser.parse_args()
    if args.quick:
        grads = attribution_grads.run(1024, loop_examples=64, repeats=3)
    else:
        grads = attribution_grads.run()
    influence = attribution_influence.run(args.quick)
    emit({"per_example_grads": grads, **influence})
    print(attribution_influence.markdown_table(influence))


if __name__ == "__main__":
    main()
