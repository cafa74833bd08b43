"""Numerics of Q-GaLore: GaLore equivalence, int4 projector error and lazy SVD refreshes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import dequantize_int4, quantize_int4, scale_by_q_galore

SHAPES = {"w": (6, 4), "v": (3, 5), "b": (4,)}


def _grads(rng):
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def test_unquantised_and_not_lazy_matches_optax_galore():
    kw = {"rank": 2, "update_proj_gap": 3}
    ours = scale_by_q_galore(**kw, quantize=False, cos_threshold=None)
    ref = optax.contrib.scale_by_galore(**kw, base_optimizer=optax.scale_by_adam())
    rng = np.random.default_rng(0)
    params = _grads(rng)
    s, r = ours.init(params), ref.init(params)
    ours_update, ref_update = jax.jit(ours.update), jax.jit(ref.update)
    for _ in range(7):  # three refreshes (steps 0, 3, 6)
        g = _grads(rng)
        u, s = ours_update(g, s)
        v, r = ref_update(g, r)
        for k in SHAPES:
            np.testing.assert_allclose(u[k], v[k], rtol=1e-5, atol=1e-6)
    assert int(s.num_svds["w"]) == 3 and int(s.num_svds["b"]) == 0


def test_int4_round_trip_error_is_within_half_a_step():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(37, 3)), jnp.float32)
    packed, scales = quantize_int4(x, block_size=16)
    assert packed.dtype == jnp.uint8 and packed.shape == (7, 8)  # 111 entries, 2 per byte
    back = dequantize_int4(packed, scales, x.shape)
    err = np.abs(np.asarray(back - x)).reshape(-1)
    bound = np.repeat(np.asarray(scales) / 2, 16)[: x.size]
    assert np.all(err <= bound * (1 + 1e-6))


def test_quantised_projector_error_is_reported():
    tx = scale_by_q_galore(rank=2, update_proj_gap=5, block_size=8)
    ref = scale_by_q_galore(rank=2, update_proj_gap=5, quantize=False)
    g = _grads(np.random.default_rng(2))
    u, s = jax.jit(tx.update)(g, tx.init(g))
    v, r = jax.jit(ref.update)(g, ref.init(g))
    for k in ("w", "v"):
        p = np.asarray(r.projector[k])  # the exact (float) projector of the same SVD
        packed, scales = s.projector[k]
        rebuilt = np.asarray(dequantize_int4(packed, scales, p.shape))
        expected = np.linalg.norm(rebuilt - p) / np.linalg.norm(p)
        np.testing.assert_allclose(s.quant_error[k], expected, rtol=1e-5)
        assert 0.0 < float(s.quant_error[k]) < 0.15
        # The update uses the int4 projector: close to, not equal to, the exact one.
        assert 0.0 < float(jnp.max(jnp.abs(u[k] - v[k]))) < 0.5
    assert float(s.quant_error["b"]) == 0.0


def _count_svds(tx, grad_fn, steps):
    @jax.jit
    def run(params):
        def body(t, state):
            return tx.update(grad_fn(t), state)[1]

        return jax.lax.fori_loop(0, steps, body, tx.init(params))

    return run(grad_fn(0))


def test_lazy_refresh_skips_svds_while_the_subspace_is_stable():
    # A fixed rank-1 direction scaled by a varying factor: every new projector is aligned.
    direction = jnp.outer(jnp.arange(1.0, 7.0), jnp.array([1.0, -1.0, 0.5, 2.0]))

    def stable(t):
        return {"w": direction * (1.0 + 0.1 * t)}

    tx = scale_by_q_galore(rank=1, update_proj_gap=2, patience=2, cos_threshold=0.4, block_size=8)
    state = _count_svds(tx, stable, 40)
    # Refreshes at 0, 2, 4 (interval -> 4), 8, 12 (-> 8), 20, 28 (-> 16): 7 SVDs, not 20.
    assert int(state.num_svds["w"]) == 7
    assert int(state.interval["w"]) == 16 and int(state.next_refresh["w"]) == 44

    def noisy(t):  # an unrelated random subspace at every step: never aligned at 0.99
        return {"w": jax.random.normal(jax.random.fold_in(jax.random.key(0), t), (6, 4))}

    tx = scale_by_q_galore(rank=1, update_proj_gap=2, patience=2, cos_threshold=0.99)
    assert int(_count_svds(tx, noisy, 40).num_svds["w"]) == 20


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rank": 0}, "rank"),
        ({"update_proj_gap": 0}, "update_proj_gap"),
        ({"block_size": 7}, "block_size"),
        ({"patience": 0}, "patience"),
        ({"cos_threshold": 1.5}, "cos_threshold"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_bad_input_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        scale_by_q_galore(**kwargs)


def test_rank_above_the_smaller_side_fails_at_init():
    with pytest.raises(ValueError, match=r"rank=5 is out of range.*\(6, 4\)"):
        scale_by_q_galore(rank=5).init({"w": jnp.zeros((6, 4))})
