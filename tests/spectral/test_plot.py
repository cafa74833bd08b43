"""gradlab.spectral.plot: draws a density with its band; matplotlib stays out of core imports."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np


def test_plot_density_draws_curve_and_band():
    import matplotlib

    matplotlib.use("Agg")
    import gradlab as gl
    from gradlab.spectral.plot import plot_density

    a = jnp.diag(jnp.linspace(0.0, 1.0, 30))
    sd = gl.spectral.slq(
        lambda v: a @ v, jnp.zeros(30), key=jax.random.key(0), num_probes=5, num_matvecs=6
    )
    ax = plot_density(sd, key=jax.random.key(1), label="diag", log_scale=True)
    assert len(ax.lines) == 1 and len(ax.collections) == 1
    x, yv = ax.lines[0].get_data()
    grid, sigma = gl.spectral.density_grid(sd)
    np.testing.assert_allclose(
        yv, np.maximum(gl.spectral.density(sd, grid, sigma=sigma), 1e-8), rtol=1e-5
    )
    assert ax.get_yscale() == "log"


def test_spectral_import_does_not_load_matplotlib():
    code = (
        "import sys, gradlab.spectral, gradlab.spectral.plot\nprint('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
