"""gradlab.landscape.plot: draws a line and a plane; matplotlib stays out of core imports."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest


def test_plot_line_and_plane_draw():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import gradlab as gl
    from gradlab.landscape.plot import plot_line, plot_plane

    loss = lambda p, b: jnp.sum(p**2) + 1.0  # noqa: E731
    alphas, betas = jnp.linspace(-1.0, 1.0, 7), jnp.linspace(-2.0, 2.0, 5)
    e1, e2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    on_line = gl.landscape.line(loss, jnp.zeros(2), None, e1, alphas)
    ax = plot_line(alphas, on_line, label="x^2", log_scale=True)
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(y, on_line)
    assert ax.get_yscale() == "log"
    z = gl.landscape.plane(loss, jnp.zeros(2), None, e1, e2, alphas, betas)
    ax = plot_plane(alphas, betas, z, levels=5)
    assert len(ax.lines) == 1  # the centre marker
    ax = plot_plane(alphas, betas, z, filled=True, log_scale=True)
    with pytest.raises(ValueError, match="losses has shape"):
        plot_plane(alphas, betas, z.T)
    with pytest.raises(ValueError, match="alphas has shape"):
        plot_line(alphas, z)
    plt.close("all")


def test_landscape_import_does_not_load_matplotlib():
    code = (
        "import sys, gradlab.landscape, gradlab.landscape.plot\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
