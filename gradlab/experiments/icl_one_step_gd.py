r"""von Oswald et al. (2212.07677), Mahankali et al. (2307.03576): one linear self-attention layer
trained on in-context linear regression is one step of (preconditioned) gradient descent.

Prompts hold :math:`n` pairs :math:`(x_i, y_i = w^\top x_i)`, :math:`w \sim N(0, I_d)`, and a
query :math:`(x_q, 0)`; the layer (:class:`gradlab.models.LinearSelfAttention`) predicts
:math:`y_q = w^\top x_q`. One gradient step from :math:`w_0 = 0` on
:math:`\frac{1}{2n}\sum_i (w^\top x_i - y_i)^2` predicts :math:`\eta\, x_q^\top h` with
:math:`h = \frac1n \sum_i y_i x_i`; a layer whose value row is :math:`(0, p_y)` predicts
:math:`x_q^\top \Gamma h`, :math:`\Gamma = p_y A^\top` (one step preconditioned by
:math:`\Gamma`).

**Closed form.** With :math:`x_q` independent of the prompt and :math:`E[x x^\top] = \Sigma`,
the population loss of :math:`\hat y = x_q^\top \Gamma h` is
:math:`\operatorname{tr}(\Sigma \Gamma H \Gamma^\top) - 2 \operatorname{tr}(\Sigma \Gamma
\Sigma) + \operatorname{tr}\Sigma`, with :math:`H = E[h h^\top] = \frac{n-1}{n}\Sigma^2 +
\frac1n M_4` and :math:`M_4 = E[\lVert x\rVert^2 x x^\top]` (averaging over :math:`w` first).
Setting the gradient :math:`2\Sigma\Gamma H - 2\Sigma^2` to zero gives

.. math:: \Gamma^\star = \Sigma H^{-1}.

For :math:`x \sim N(0, \Sigma)`, :math:`M_4 = \operatorname{tr}(\Sigma)\Sigma + 2\Sigma^2`, so
:math:`\Gamma^\star = n\,((n+1)\Sigma + \operatorname{tr}(\Sigma) I)^{-1}` (Ahn et al.
2306.00297, Mahankali et al.): :math:`\frac{n}{n+d+1} I` for :math:`\Sigma = I`. For
:math:`x \sim U[-1, 1]^d` (von Oswald et al.'s inputs), :math:`\Sigma = I/3`,
:math:`M_4 = (\frac15 + \frac{d-1}{9}) I` and :math:`\Gamma^\star = \frac{1}{3}\,
(\frac{n-1}{9n} + \frac{1/5 + (d-1)/9}{n})^{-1} I`. Where :math:`\Gamma^\star \propto I`
(isotropic settings) the best single GD step is already optimal; for anisotropic
:math:`\Sigma` it is not, and the trained layer should beat it.

The GD step's :math:`\eta` comes from an exact line search (the loss is quadratic in
:math:`\eta`) on a separate set of prompts; all losses are measured on a held-out set.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "KNOWN_FAILING",
    "SETTINGS",
    "Config",
    "checks",
    "closed_form_gamma",
    "input_covariance",
    "plot",
    "run",
]

#: Checks that fail after a faithful setup (none).
KNOWN_FAILING: tuple[str, ...] = ()

SETTINGS = ("isotropic", "uniform", "anisotropic")
ISOTROPIC = ("isotropic", "uniform")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    num_seeds: int = 3
    dim: int = 10
    num_context: int = 10
    condition_number: float = 10.0
    batch_size: int = 1024
    num_steps: int = 2000
    learning_rate: float = 3e-3
    final_lr_fraction: float = 0.01
    init_scale: float = 0.02
    num_eval: int = 20000
    # acceptance thresholds (from the issue, set before the run)
    min_sensitivity_cosine: float = 0.99
    max_loss_gap: float = 0.01
    max_gamma_error: float = 0.05
    min_anisotropic_gain: float = 0.01


def input_covariance(setting: str, dim: int, condition_number: float) -> np.ndarray:
    r"""The input covariance :math:`\Sigma` of a setting.

    ``"isotropic"``: :math:`I`; ``"uniform"``: :math:`I/3` (:math:`U[-1, 1]^d`);
    ``"anisotropic"``: :math:`\operatorname{diag}(\lambda)`, :math:`\lambda` log-spaced with
    ratio ``condition_number`` and mean 1 (axis-aligned: a rotation changes neither the
    closed form nor the GD step, only how fast Adam's per-coordinate scaling gets there).

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.icl_one_step_gd import input_covariance
        >>> s = input_covariance("anisotropic", 4, 10.0)
        >>> round(float(np.trace(s)), 6), round(float(np.linalg.cond(s)), 6)
        (4.0, 10.0)
    """
    if setting == "isotropic":
        return np.eye(dim)
    if setting == "uniform":
        return np.eye(dim) / 3.0
    if setting != "anisotropic":
        raise ValueError(f"setting={setting!r} is not a valid choice: expected one of {SETTINGS}")
    lam = np.geomspace(1.0, 1.0 / condition_number, dim)
    lam *= dim / lam.sum()
    return np.diag(lam)


def closed_form_gamma(setting: str, sigma: np.ndarray, num_context: int) -> np.ndarray:
    r"""The optimal preconditioner :math:`\Gamma^\star = \Sigma H^{-1}` (module docstring).

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.icl_one_step_gd import closed_form_gamma
        >>> g = closed_form_gamma("isotropic", np.eye(10), 10)
        >>> bool(np.allclose(g, np.eye(10) * 10 / 21))
        True
    """
    d, n = sigma.shape[0], num_context
    if setting == "uniform":  # iid U[-1, 1]: E x^4 = 1/5, variance 1/3, odd moments vanish
        m4 = (1.0 / 5.0 + (d - 1) / 9.0) * np.eye(d)
    else:  # Gaussian (Isserlis)
        m4 = np.trace(sigma) * sigma + 2.0 * sigma @ sigma
    h = (n - 1) / n * sigma @ sigma + m4 / n
    return sigma @ np.linalg.inv(h)


@functools.partial(jax.jit, static_argnames=("batch", "dim", "n"))
def _sample(key, batch: int, chol: jax.Array, uniform: jax.Array, dim: int, n: int):
    """``batch`` prompts of one setting (``chol``: Cholesky factor of Sigma, ``uniform``: bool).

    Both laws are one traced program (``lax.cond`` on ``uniform``, same key for either draw), so
    the three settings share one compiled training loop and one compiled evaluation sampler.
    """
    kx, kw = jax.random.split(key)
    shape = (batch, n + 1, dim)
    x = jax.lax.cond(
        uniform,
        lambda: jax.random.uniform(kx, shape, minval=-1.0, maxval=1.0),
        lambda: jax.random.normal(kx, shape) @ chol.T,
    )
    w = jax.random.normal(kw, (batch, dim))
    y = jnp.einsum("bnd,bd->bn", x, w)
    z = jnp.concatenate([x, y[..., None]], axis=-1).at[:, -1, -1].set(0.0)
    return z, y[:, -1]


@functools.lru_cache(maxsize=8)
def _trainer(config: Config):
    """The jitted Adam training loop for ``config``, compiled once for every setting and seed."""
    import optax

    import gradlab as gl

    d, n = config.dim, config.num_context
    # apply_fn depends only on (d, n, init_scale), not on the key
    _, predict = gl.models.init_lsa(jax.random.key(0), d, n, init_scale=config.init_scale)
    schedule = optax.cosine_decay_schedule(
        config.learning_rate, config.num_steps, alpha=config.final_lr_fraction
    )
    opt = optax.adam(schedule)

    def loss_fn(p, z, y):
        return jnp.mean((predict(p, z) - y) ** 2)

    @jax.jit
    def train(params, keys, chol, uniform):
        def step(carry, key):
            p, s = carry
            z, y = _sample(key, config.batch_size, chol, uniform, d, n)
            loss, g = jax.value_and_grad(loss_fn)(p, z, y)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        return jax.lax.scan(step, (params, opt.init(params)), keys)

    return train


def _effective_gamma(params, dim: int) -> jax.Array:
    p = params["params"]
    return p["w_pv"][dim, dim] * p["w_kq"][:dim, :dim].T


def _moment(z):
    """h = (1/n) sum_i y_i x_i and the query x_q of each prompt."""
    x, y = z[:, :-1, :-1], z[:, :-1, -1]
    return jnp.einsum("bn,bnd->bd", y, x) / x.shape[1], z[:, -1, :-1]


def _train_and_measure(config: Config, setting: str, seed: int) -> dict:
    import gradlab as gl

    d, n = config.dim, config.num_context
    sigma = input_covariance(setting, d, config.condition_number)
    chol = jnp.asarray(np.linalg.cholesky(sigma), jnp.float32)
    uniform = jnp.asarray(setting == "uniform")

    def sample(key, batch):
        return _sample(key, batch, chol, uniform, d, n)

    key_init, key_train, key_ls, key_eval = jax.random.split(jax.random.key(seed), 4)
    params, predict = gl.models.init_lsa(key_init, d, n, init_scale=config.init_scale)
    keys = jax.random.split(key_train, config.num_steps)
    (params, _), losses = _trainer(config)(params, keys, chol, uniform)

    # exact line search of one GD step from 0 on separate prompts
    z_ls, y_ls = sample(key_ls, config.num_eval)
    h, xq = _moment(z_ls)
    pred1 = jnp.sum(xq * h, axis=-1)
    eta = float(jnp.sum(pred1 * y_ls) / jnp.sum(pred1**2))

    z, y = sample(key_eval, config.num_eval)
    h, xq = _moment(z)
    gamma_star = jnp.asarray(closed_form_gamma(setting, sigma, n), jnp.float32)
    gamma = _effective_gamma(params, d)
    y_lsa = predict(params, z)
    y_gd = eta * jnp.sum(xq * h, axis=-1)
    y_star = jnp.einsum("bd,de,be->b", xq, gamma_star, h)
    y_gamma = jnp.einsum("bd,de,be->b", xq, gamma, h)

    def pred_of_query(xq_one, z_one):
        return predict(params, z_one.at[-1, :-1].set(xq_one))

    sens = jax.vmap(jax.grad(pred_of_query))(xq, z)  # d y_hat / d x_q, (B, d)
    sens_gd = eta * h
    cos = jnp.sum(sens * sens_gd, -1) / (
        jnp.linalg.norm(sens, axis=-1) * jnp.linalg.norm(sens_gd, axis=-1)
    )
    mse = lambda p: float(jnp.mean((p - y) ** 2))  # noqa: E731
    return {
        "train_loss": np.asarray(losses).tolist(),
        "eta": eta,
        "loss_lsa": mse(y_lsa),
        "loss_gd": mse(y_gd),
        "loss_closed_form": mse(y_star),
        "sensitivity_cosine": float(jnp.mean(cos)),
        "gamma_error": float(jnp.linalg.norm(gamma - gamma_star) / jnp.linalg.norm(gamma_star)),
        "gamma_residual": float(jnp.linalg.norm(y_lsa - y_gamma) / jnp.linalg.norm(y_lsa)),
        "gamma": np.asarray(gamma).tolist(),
        "gamma_star": np.asarray(gamma_star).tolist(),
    }


def run(config: Config, progress) -> dict:
    """Train the layer ``num_seeds`` times per setting; measure it against GD and the closed form."""
    out = {}
    with progress(total=len(SETTINGS) * config.num_seeds, desc="icl_one_step_gd") as bar:
        for setting in SETTINGS:
            rows = []
            for s in range(config.num_seeds):
                rows.append(_train_and_measure(config, setting, config.seed + s))
                bar.update(1)
            out[setting] = {k: [r[k] for r in rows] for k in rows[0]}
    return out


def checks(config: Config, results: dict) -> list[Check]:
    """Isotropic: cosine >= 0.99, loss within 1% of GD; Gamma within 5%; anisotropic gain >= 1%.

    Every check takes the worst seed.
    """
    out = []
    for setting in ISOTROPIC:
        r = results[setting]
        out.append(
            check(
                f"{setting}: mean cosine of d y_hat / d x_q, LSA vs GD (worst seed)",
                min(r["sensitivity_cosine"]),
                ">=",
                config.min_sensitivity_cosine,
            )
        )
        gap = np.abs(np.asarray(r["loss_lsa"]) / np.asarray(r["loss_gd"]) - 1.0)
        out.append(
            check(
                f"{setting}: |loss LSA / loss GD - 1| (worst seed)",
                float(np.max(gap)),
                "<=",
                config.max_loss_gap,
            )
        )
    for setting in SETTINGS:
        out.append(
            check(
                f"{setting}: |Gamma - Gamma*|_F / |Gamma*|_F (worst seed)",
                max(results[setting]["gamma_error"]),
                "<=",
                config.max_gamma_error,
            )
        )
    r = results["anisotropic"]
    gain = 1.0 - np.asarray(r["loss_lsa"]) / np.asarray(r["loss_gd"])
    out.append(
        check(
            "anisotropic: 1 - loss LSA / loss GD (worst seed)",
            float(np.min(gain)),
            ">=",
            config.min_anisotropic_gain,
        )
    )
    return out


def plot(config: Config, results: dict):
    """Training loss against GD and the closed form; learned vs closed-form Gamma."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    ax = axes[0]
    for i, setting in enumerate(SETTINGS):
        r = results[setting]
        loss = np.asarray(r["train_loss"][0])
        k = max(1, loss.size // 200)
        smooth = loss[: loss.size // k * k].reshape(-1, k).mean(-1)
        ax.semilogy(np.arange(smooth.size) * k, smooth, color=f"C{i}", label=f"LSA, {setting}")
        ax.axhline(np.mean(r["loss_gd"]), color=f"C{i}", ls="--", lw=1)
        ax.axhline(np.mean(r["loss_closed_form"]), color=f"C{i}", ls=":", lw=1)
    ax.set(xlabel="Adam step", ylabel="MSE", title="training (-- best GD step, : Gamma*)")
    ax.legend(fontsize=8)
    for ax, setting in zip(axes[1:], SETTINGS, strict=True):
        r = results[setting]
        g, gs = np.asarray(r["gamma"][0]), np.asarray(r["gamma_star"][0])
        off = ~np.eye(g.shape[0], dtype=bool)
        ax.plot(np.diag(gs), np.diag(g), "o", label="diagonal")
        ax.plot(gs[off], g[off], ".", color="C1", label="off-diagonal")
        lo, hi = min(gs.min(), g.min()), max(gs.max(), g.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.axhline(r["eta"][0], color="C2", lw=1, ls=":", label="GD step eta")
        ax.set(
            xlabel="closed-form Gamma* entry",
            ylabel="learned Gamma entry",
            title=f"{setting}: error {r['gamma_error'][0]:.3f}",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="icl_one_step_gd",
    title="Transformers learn in-context by gradient descent / One Step of Gradient Descent is "
    "Provably the Optimal In-Context Learner with One Layer of Linear Self-Attention",
    arxiv="2212.07677",
    cpu_time="~4 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="a trained linear self-attention layer is one step of GD (isotropic inputs) and "
    "of preconditioned GD with the closed-form Gamma* (anisotropic inputs)",
)
