"""``gradlab demo``: top Hessian eigenvalues and the Hessian trace of a small MLP, in seconds."""

from __future__ import annotations

import time

__all__ = ["demo"]


def demo(*, seed: int = 0, num_steps: int = 100, learning_rate: float = 0.1, quiet: bool = False):
    """Train a 64-32-32-10 tanh MLP on 512 digits a few steps, then probe its Hessian.

    Prints the top-5 eigenvalues of the full-batch Hessian (``gradlab.spectral.eigsh`` on
    ``gradlab.curvature.hessian``) with their residuals, and a Hutch++ estimate of its trace
    with the standard error (``gradlab.spectral.trace``).

    Args:
        seed: PRNG seed for the initialisation and the random probes.
        num_steps: full-batch gradient-descent steps before probing.
        learning_rate: step size of gradient descent.
        quiet: do not print.

    Returns:
        ``dict`` with ``eigenvalues`` (5 floats), ``trace``, ``trace_sem``, ``loss``,
        ``num_params`` and ``seconds``.
    """
    import jax

    import gradlab as gl
    from gradlab.experiments._common import tree_size

    t0 = time.perf_counter()
    x, y = gl.data.digits(512)
    key = jax.random.key(seed)
    k_init, k_eig, k_trace = jax.random.split(key, 3)
    params, apply_fn = gl.models.init_mlp(k_init, (64, 32, 32, 10), activation="tanh")

    def loss_fn(p, batch):
        return gl.models.softmax_cross_entropy(apply_fn(p, batch[0]), batch[1])

    @jax.jit
    def train(p, batch):
        def step(p, _):
            loss, g = jax.value_and_grad(loss_fn)(p, batch)
            return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g), loss

        return jax.lax.scan(step, p, None, length=num_steps)

    @jax.jit
    def probe(p, batch, k_eig, k_trace):
        hvp = gl.curvature.hessian(loss_fn, p, batch)
        eig = gl.spectral.eigsh(hvp, p, k=5, key=k_eig, num_matvecs=40)
        tr = gl.spectral.trace(hvp, p, key=k_trace, num_matvecs=60)
        return eig, tr, loss_fn(p, batch)

    batch = (x, y)
    params, losses = train(params, batch)
    eig, tr, loss = probe(params, batch, k_eig, k_trace)
    seconds = time.perf_counter() - t0
    out = {
        "eigenvalues": [float(v) for v in eig.eigenvalues],
        "residuals": [float(v) for v in eig.residuals],
        "trace": float(tr.value),
        "trace_sem": float(tr.sem),
        "loss": float(loss),
        "num_params": tree_size(params),
        "seconds": seconds,
    }
    if not quiet:
        print(
            f"tanh MLP 64-32-32-10 on 512 digits ({out['num_params']} params), "
            f"{num_steps} GD steps (lr {learning_rate}): loss {float(losses[0]):.3f} -> "
            f"{out['loss']:.3f}"
        )
        print("top-5 Hessian eigenvalues (gradlab.spectral.eigsh on gradlab.curvature.hessian):")
        for i, (lam, res) in enumerate(zip(out["eigenvalues"], out["residuals"], strict=True)):
            print(f"  lambda_{i + 1} = {lam:9.4f}   (residual {res:.1e})")
        print(
            f"Hessian trace (gradlab.spectral.trace, Hutch++, 60 matvecs): "
            f"{out['trace']:.3f} +- {out['trace_sem']:.3f}"
        )
        print(f"done in {seconds:.1f} s")
    return out
