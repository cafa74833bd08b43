"""Regenerate every figure and rendered notebook shown in the docs; never edit them by hand.

Three steps, all by default:

* ``reproductions``: run each reproduction in **full** mode (``gradlab reproduce NAME``'s code
  path) and copy its ``figure.png`` to ``docs/figures/reproductions/NAME.png``;
* ``guides``: draw the pictures of the curvature, spectral and NTK guides with gradlab's own
  plot helpers into ``docs/figures/guides/``;
* ``notebooks``: execute ``notebooks/*.py`` and store them, outputs included, as
  ``docs/notebooks/NAME.ipynb`` (rendered by mkdocs-jupyter). The reproduction notebooks run in
  smoke mode (their full-mode figure is already on the reproductions page), the tutorial in its
  default setting.

Every PNG is re-encoded to a 256-colour palette (no dithering) so the docs stay small; the
pixels are otherwise those matplotlib drew.

Usage, from the repository root (after ``pip install -e ".[all]"``)::

    python scripts/make_figures.py                          # everything (~30 min of CPU)
    python scripts/make_figures.py --names ntk_width data_diet
    python scripts/make_figures.py --only guides notebooks
    python scripts/make_figures.py --from-runs runs         # reuse full-mode runs in ./runs

``--names`` restricts the reproductions and the reproduction notebooks to those names (any name
of ``gradlab.experiments.NAMES``); ``--from-runs DIR`` copies the newest full-mode run of each
name found under ``DIR/NAME/`` instead of running it (for runs made with
``gradlab reproduce --all --out DIR``). Full runs are CPU heavy (1-4 min each on an idle
2-core machine): prefix with ``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
STEPS = ("reproductions", "guides", "notebooks")
DPI = 90


# --------------------------------------------------------------------------------- PNG output
def _compress_png(data: bytes) -> bytes:
    """Re-encode PNG bytes to a 256-colour palette without dithering (lossless for most plots)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue() if len(out.getvalue()) < len(data) else data


def _write_png(data: bytes, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_compress_png(data))
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KB)", flush=True)


def _save_figure(fig, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    _write_png(buf.getvalue(), path)


# ------------------------------------------------------------------------------ reproductions
def _newest_full_run(root: pathlib.Path, name: str) -> pathlib.Path | None:
    runs = []
    for run in (root / name).glob("*"):
        record = run / "results.json"
        if not record.is_file() or not (run / "figure.png").is_file():
            continue
        if json.loads(record.read_text()).get("smoke", True):
            continue
        runs.append(run)
    return max(runs, key=lambda r: r.name) if runs else None


def reproductions(names, *, out: pathlib.Path, from_runs: pathlib.Path | None) -> list[str]:
    """Full-mode figure of each reproduction; returns the names that have none."""
    from gradlab.experiments.runner import format_checks, run_experiment

    missing = []
    for name in names:
        print(f"== reproduction {name}", flush=True)
        if from_runs is not None:
            run_dir = _newest_full_run(from_runs, name)
            if run_dir is None:
                print(f"  no full-mode run of {name} under {from_runs}", flush=True)
                missing.append(name)
                continue
        else:
            t0 = time.perf_counter()
            result = run_experiment(name, smoke=False, out=out, progress=False)
            print(format_checks(result.checks))
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
            run_dir = result.run_dir
        print(f"  from {run_dir}", flush=True)
        _write_png((run_dir / "figure.png").read_bytes(), FIGURES / "reproductions" / f"{name}.png")
    return missing


# ------------------------------------------------------------------------------------- guides
def _digits_mlp(sizes, num_examples):
    import jax

    import gradlab as gl

    x, y = gl.data.digits(num_examples)
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes)

    def loss_fn(params, batch):
        return gl.curvature.softmax_cross_entropy(apply_fn(params, batch[0]), batch[1])

    return params, apply_fn, loss_fn, (x, y)


def guide_spectral() -> None:
    """The spectral guide's setup (610 parameters): SLQ and eigsh against the dense spectrum."""
    import jax
    import matplotlib.pyplot as plt
    import numpy as np

    import gradlab as gl
    from gradlab.spectral.plot import plot_density

    params, _, loss_fn, batch = _digits_mlp((64, 8, 10), 128)
    hvp = gl.curvature.hessian(loss_fn, params, batch)
    dense = np.asarray(gl.curvature.dense(hvp, params))
    exact = np.linalg.eigvalsh((dense + dense.T) / 2)
    sd = gl.spectral.slq(hvp, params, key=jax.random.key(3), num_probes=8, num_matvecs=40)
    top = gl.spectral.eigsh(hvp, params, k=8, key=jax.random.key(1))

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax0.hist(exact, bins=120, density=True, color="0.8", label="dense eigvalsh")
    plot_density(sd, key=jax.random.key(4), ax=ax0, log_scale=True, label="SLQ, 8 probes x 40")
    ax0.set_ylim(1e-4, None)
    ax0.set_title("Hessian spectral density (610 parameters)")
    index = np.arange(1, 9)
    ax1.plot(index, exact[::-1][:8], "s", mfc="none", ms=9, label="dense eigvalsh")
    ax1.errorbar(
        index,
        np.asarray(top.eigenvalues),
        yerr=np.asarray(top.residuals),
        fmt="o",
        ms=4,
        capsize=3,
        label="eigsh Ritz value (bar: residual)",
    )
    ax1.set(xlabel="index i", ylabel=r"$\lambda_i$", title="top eigenvalues")
    ax1.legend(fontsize=8)
    _save_figure(fig, FIGURES / "guides" / "spectral.png")


def guide_curvature() -> None:
    """Hessian, GGN and K-FAC of a digits MLP: densities with bands and top eigenvalues."""
    import jax
    import matplotlib.pyplot as plt
    import numpy as np

    import gradlab as gl
    from gradlab.spectral.plot import plot_density

    params, apply_fn, loss_fn, batch = _digits_mlp((64, 32, 32, 10), 512)
    hvp = gl.curvature.hessian(loss_fn, params, batch)
    gvp = gl.curvature.ggn(apply_fn, "softmax_cross_entropy", params, batch)
    kf = gl.curvature.kfac(apply_fn, "softmax_cross_entropy", params, batch)

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    grid = None
    tops = {}
    for i, (label, matvec, color) in enumerate(
        (("Hessian", hvp, "C0"), ("GGN", gvp, "C1"), ("K-FAC", kf.matvec, "C2"))
    ):
        sd = gl.spectral.slq(matvec, params, key=jax.random.key(10), num_probes=8, num_matvecs=60)
        if grid is None:
            nodes = np.asarray(sd.nodes)
            lo, hi = nodes.min(), nodes.max()
            pad = 0.05 * (hi - lo)
            grid = np.linspace(lo - pad, hi + pad, 600)
        plot_density(
            sd,
            key=jax.random.key(20 + i),
            ax=ax0,
            grid=grid,
            sigma=0.01 * (hi - lo),
            log_scale=True,
            label=label,
            color=color,
        )
        top = gl.spectral.eigsh(matvec, params, k=12, key=jax.random.key(1))
        tops[label] = (np.asarray(top.eigenvalues), np.asarray(top.residuals), color)
    ax0.set_ylim(1e-4, None)
    ax0.legend(handles=ax0.lines, fontsize=8)  # the curves; each shaded band is 90% bootstrap
    ax0.set_title("densities at initialisation (bands: 90% bootstrap)")
    for label, (values, residuals, color) in tops.items():
        ax1.errorbar(
            np.arange(1, 13),
            values,
            yerr=residuals,
            fmt="o-",
            ms=4,
            capsize=2,
            color=color,
            label=label,
        )
    ax1.set(xlabel="index i", ylabel=r"$\lambda_i$", yscale="log", title="top 12 eigenvalues")
    ax1.legend(fontsize=8)
    _save_figure(fig, FIGURES / "guides" / "curvature.png")


def guide_ntk() -> None:
    """Empirical NTK at two widths against the infinite-width kernel, and its spectrum."""
    import jax
    import matplotlib.pyplot as plt
    import numpy as np

    import gradlab as gl
    from gradlab.spectral.plot import plot_density

    x = gl.data.unit_circle(32)
    limit = np.asarray(gl.ntk.infinite_mlp(3, activation="relu", bias_std=0.1)(x).ntk)
    kernels = {}
    for width in (64, 2048):
        params, apply_fn = gl.models.init_ntk_mlp(
            jax.random.key(0), (2, width, width, width, 1), bias_std=0.1
        )
        kernels[width] = np.asarray(gl.ntk.empirical_ntk(apply_fn, params, x))
    operator = gl.ntk.ntk_operator(apply_fn, params, x)
    sd = gl.spectral.slq(operator, x[:, :1], key=jax.random.key(5), num_probes=6, num_matvecs=20)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), layout="constrained")
    vmin, vmax = limit.min(), limit.max()
    for ax, (title, k) in zip(
        axes[:3],
        (("width 64", kernels[64]), ("width 2048", kernels[2048]), ("infinite width", limit)),
        strict=True,
    ):
        image = ax.imshow(k, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(f"NTK, {title}")
        ax.set_xlabel("input (angle order)")
    fig.colorbar(image, ax=axes[:3], fraction=0.02)
    ax = axes[3]
    for exact in np.linalg.eigvalsh(kernels[2048]):
        ax.axvline(exact, color="0.85", lw=0.8)
    plot_density(sd, key=jax.random.key(6), ax=ax, log_scale=True, label="SLQ (width 2048)")
    ax.set_ylim(1e-4, None)
    ax.set_title("NTK spectrum (grey: dense)")
    _save_figure(fig, FIGURES / "guides" / "ntk.png")


def guides() -> None:
    for draw in (guide_spectral, guide_curvature, guide_ntk):
        print(f"== guide figure {draw.__name__}", flush=True)
        draw()


# ---------------------------------------------------------------------------------- notebooks
def _compress_outputs(nb) -> None:
    """Palette-encode output images; drop a repeat of an image already shown by the same cell.

    A cell ending in ``fig`` shows the figure twice under the inline backend (once as the
    cell's value, once when the backend flushes the open figure); one copy is kept.
    """
    for cell in nb.cells:
        seen, kept = set(), []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                if data["image/png"] in seen:
                    continue
                seen.add(data["image/png"])
                raw = _compress_png(base64.b64decode(data["image/png"]))
                data["image/png"] = base64.b64encode(raw).decode("ascii")
                seen.add(data["image/png"])
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept


def _small_matplotlibrc(out: pathlib.Path) -> pathlib.Path:
    """A matplotlibrc with a low figure dpi for the stored notebooks' inline figures."""
    path = out / "matplotlibrc"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("figure.dpi: 72\n")
    return path


def notebooks(names, *, out: pathlib.Path, tutorial: bool = True) -> list[str]:
    """Execute the notebooks and store them with outputs; returns those that failed."""
    import jupytext
    import nbclient
    import nbformat

    paths = [ROOT / "notebooks" / "tutorial_your_model.py"] if tutorial else []
    paths += [ROOT / "notebooks" / f"{name}.py" for name in names]
    failed = []
    for path in paths:
        if not path.exists():
            print(f"== notebook {path.name}: not written yet, skipped", flush=True)
            continue
        smoke = path.stem != "tutorial_your_model"
        print(f"== notebook {path.stem} ({'smoke' if smoke else 'default'} mode)", flush=True)
        nb = jupytext.read(path)
        env = {
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MATPLOTLIBRC": str(_small_matplotlibrc(out)),
            "GRADLAB_RUNS": str(out / "notebook-runs"),
        }
        saved = {key: os.environ.get(key) for key in (*env, "GRADLAB_SMOKE")}
        os.environ.update(env)
        if smoke:
            os.environ["GRADLAB_SMOKE"] = "1"
        else:
            os.environ.pop("GRADLAB_SMOKE", None)
        t0 = time.perf_counter()
        try:
            nbclient.NotebookClient(
                nb,
                timeout=1800,
                kernel_name="python3",
                resources={"metadata": {"path": str(ROOT)}},
            ).execute()
        except Exception as err:  # keep going; report at the end
            print(f"  FAILED: {type(err).__name__}: {str(err)[:300]}", flush=True)
            failed.append(path.stem)
            continue
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        _compress_outputs(nb)
        nb.metadata.pop("jupytext", None)  # a stored rendering, not a paired notebook
        target = DOCS / "notebooks" / f"{path.stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        size = target.stat().st_size / 1024
        print(
            f"  wrote {target.relative_to(ROOT)} ({size:.0f} KB, {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return failed


# --------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    from gradlab.experiments.registry import NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--names",
        nargs="+",
        choices=NAMES,
        default=list(NAMES),
        help="reproductions (and their notebooks) to redo; default all",
    )
    parser.add_argument(
        "--only", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run; default all"
    )
    parser.add_argument(
        "--from-runs",
        type=pathlib.Path,
        default=None,
        help="copy the newest full-mode run under DIR/NAME/ instead of running",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="root of the run folders written (default: a temporary folder)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="gradlab-figures-") as tmp:
        out = args.out or pathlib.Path(tmp)
        problems = []
        if "reproductions" in args.only:
            missing = reproductions(args.names, out=out, from_runs=args.from_runs)
            problems += [f"no full-mode figure: {name}" for name in missing]
        if "guides" in args.only:
            guides()
        if "notebooks" in args.only:
            problems += [f"notebook failed: {name}" for name in notebooks(args.names, out=out)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
