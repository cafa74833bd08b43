"""Bad input raises ValueError/TypeError naming the argument, at construction or first call."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradlab as gl

SETTINGS = settings(max_examples=20, deadline=None)

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
X = jnp.ones((4, 3))
Y = jnp.zeros((4, 2))


def model_fn(p, x):
    return x @ p["w"] + p["b"]


def loss_fn(p, batch):
    return gl.curvature.mse(model_fn(p, batch[0]), batch[1])


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@SETTINGS
@given(shape=shapes)
def test_non_scalar_loss(shape):
    def bad_loss(p, batch):
        return jnp.zeros(shape) + jnp.sum(p["w"])

    with pytest.raises(ValueError, match=rf"loss_fn must return a scalar.*{re.escape(str(shape))}"):
        gl.curvature.hessian(bad_loss, PARAMS, (X, Y))
    with pytest.raises(ValueError, match="loss_fn"):
        gl.curvature.empirical_fisher(bad_loss, PARAMS, (X, Y))
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        gl.curvature.ggn(model_fn, lambda o, t: jnp.zeros(shape) + o.sum(), PARAMS, (X, Y))


def test_loss_returning_a_tuple_or_ints():
    with pytest.raises(ValueError, match="loss_fn"):
        gl.curvature.hessian(lambda p, b: (loss_fn(p, b), 0.0), PARAMS, (X, Y))
    with pytest.raises(ValueError, match="floating"):
        gl.curvature.hessian(lambda p, b: jnp.int32(1), PARAMS, (X, Y))


@SETTINGS
@given(n1=st.integers(1, 6), n2=st.integers(1, 6))
def test_batch_leading_sizes_differ(n1, n2):
    batch = (jnp.ones((n1, 3)), jnp.zeros((n2, 2)))
    constructors = [
        lambda: gl.curvature.hessian(loss_fn, PARAMS, batch),
        lambda: gl.curvature.ggn(model_fn, "mse", PARAMS, batch),
        lambda: gl.curvature.empirical_fisher(loss_fn, PARAMS, batch),
        lambda: gl.curvature.fisher(model_fn, PARAMS, batch, key=jax.random.key(0)),
    ]
    for make in constructors:
        if n1 == n2:
            make()
        else:
            with pytest.raises(ValueError, match=rf"batch leaves have different leading.*{n1}"):
                make()


def test_scalar_batch_leaf():
    with pytest.raises(ValueError, match="batch leaf .* is a scalar"):
        gl.curvature.hessian(lambda p, b: jnp.sum(p["w"]) * b[0], PARAMS, (jnp.ones(()), X))


def _operators():
    return {
        "hessian": gl.curvature.hessian(loss_fn, PARAMS, (X, Y)),
        "ggn": gl.curvature.ggn(model_fn, "mse", PARAMS, (X, Y)),
        "fisher": gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=jax.random.key(0)),
        "empirical_fisher": gl.curvature.empirical_fisher(loss_fn, PARAMS, (X, Y)),
    }


OPERATORS = _operators()


@SETTINGS
@given(shape=shapes, name=st.sampled_from(sorted(OPERATORS)), jit=st.booleans())
def test_v_with_wrong_leaf_shape(shape, name, jit):
    v = {"w": jnp.ones(shape), "b": jnp.zeros(2)}
    mv = jax.jit(OPERATORS[name]) if jit else OPERATORS[name]
    if shape == (3, 2):
        mv(v)
        return
    with pytest.raises(ValueError, match=r"v does not match the expected pytree"):
        mv(v)


@SETTINGS
@given(
    name=st.sampled_from(sorted(OPERATORS)),
    v=st.sampled_from(
        [
            {"w": jnp.ones((3, 2))},
            {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "c": jnp.zeros(1)},
            [jnp.ones((3, 2)), jnp.zeros(2)],
            jnp.ones(8),
        ]
    ),
)
def test_v_with_wrong_structure(name, v):
    with pytest.raises(TypeError, match=r"v does not match the expected pytree"):
        OPERATORS[name](v)


@SETTINGS
@given(
    name=st.sampled_from(sorted(OPERATORS)),
    dtype=st.sampled_from([jnp.float16, jnp.bfloat16, jnp.float32, jnp.int32, jnp.int8]),
)
def test_v_dtype_is_cast_to_params_dtype(name, dtype):
    v = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros(2, dtype)}
    out = OPERATORS[name](v)
    ref = OPERATORS[name]({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        assert a.dtype == jnp.float32
        assert bool(jnp.allclose(a, b, rtol=1e-6, atol=1e-6))


@SETTINGS
@given(num_samples=st.integers(-5, 0))
def test_num_samples_below_one(num_samples):
    with pytest.raises(
        ValueError, match=rf"num_samples={num_samples} is out of range.*1 <= num_samples"
    ):
        gl.curvature.fisher(
            model_fn, PARAMS, (X, Y), key=jax.random.key(0), num_samples=num_samples
        )


@pytest.mark.parametrize("num_samples", [1.5, "2", None, True])
def test_num_samples_not_an_int(num_samples):
    with pytest.raises(TypeError, match="num_samples"):
        gl.curvature.fisher(
            model_fn, PARAMS, (X, Y), key=jax.random.key(0), num_samples=num_samples
        )


@SETTINGS
@given(likelihood=st.text(max_size=12).filter(lambda s: s not in ("categorical", "gaussian")))
def test_unknown_likelihood(likelihood):
    with pytest.raises(ValueError, match=r"likelihood=.*expected one of 'categorical', 'gaussian'"):
        gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=jax.random.key(0), likelihood=likelihood)


def test_fisher_key_errors():
    with pytest.raises(ValueError, match="key"):
        gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=None)
    with pytest.raises(TypeError, match="key"):
        gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(TypeError, match="key"):
        gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=3)
    gl.curvature.fisher(model_fn, PARAMS, (X, Y), key=jax.random.PRNGKey(0))  # raw keys work


@SETTINGS
@given(loss=st.text(max_size=25).filter(lambda s: s not in ("mse", "softmax_cross_entropy")))
def test_unknown_loss_name(loss):
    with pytest.raises(
        ValueError, match=r"loss_fn=.*expected one of 'softmax_cross_entropy', 'mse'"
    ):
        gl.curvature.ggn(model_fn, loss, PARAMS, (X, Y))


@pytest.mark.parametrize("batch", [X, (X,), (X, Y, Y), {"x": X, "y": Y}])
def test_ggn_batch_not_a_pair(batch):
    with pytest.raises(TypeError, match=r"batch must be a pair \(inputs, targets\)"):
        gl.curvature.ggn(model_fn, "mse", PARAMS, batch)


def test_not_callable():
    with pytest.raises(TypeError, match="loss_fn"):
        gl.curvature.hessian("loss", PARAMS, (X, Y))
    with pytest.raises(TypeError, match="model_fn"):
        gl.curvature.ggn(None, "mse", PARAMS, (X, Y))
    with pytest.raises(TypeError, match="linearize"):
        gl.curvature.hessian(loss_fn, PARAMS, (X, Y), linearize="yes")


def test_ce_targets_that_do_not_fit_logits():
    with pytest.raises(ValueError, match="targets of shape"):
        gl.curvature.ggn(model_fn, "softmax_cross_entropy", PARAMS, (X, jnp.zeros((4, 5))))


@SETTINGS
@given(max_size=st.integers(1, 7), chunk_size=st.integers(-3, 9))
def test_dense_limits(max_size, chunk_size):
    hvp = OPERATORS["hessian"]  # n = 8
    if chunk_size < 1:
        with pytest.raises(ValueError, match="chunk_size"):
            gl.curvature.dense(hvp, PARAMS, max_size=100, chunk_size=chunk_size)
    else:
        with pytest.raises(ValueError, match=rf"n=8 exceeds max_size={max_size}.*max_size=8"):
            gl.curvature.dense(hvp, PARAMS, max_size=max_size, chunk_size=chunk_size)


def test_fisher_batch_hint_and_logits_rank():
    with pytest.raises(TypeError, match=r"pass \(inputs, None\)"):
        gl.curvature.fisher(model_fn, PARAMS, X, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num_classes"):
        gl.curvature.fisher(lambda p, x: x @ p["w"][:, 0], PARAMS, (X, None), key=jax.random.key(0))


# ----------------------------------------------------------------------------- K-FAC / labels


_MLP = nn.Dense(3)
_MLP_PARAMS = _MLP.init(jax.random.key(0), X)


@pytest.mark.parametrize("build", ["ggn", "fisher", "kfac", "ekfac"])
def test_cross_entropy_labels_out_of_range_name_the_example(build):
    labels = jnp.array([0, 2, 3, 1])  # 3 classes: example 2 holds label 3
    batch = (X, labels)
    ce = "softmax_cross_entropy"
    call = {
        "ggn": lambda: gl.curvature.ggn(_MLP.apply, ce, _MLP_PARAMS, batch),
        "fisher": lambda: gl.curvature.fisher(
            _MLP.apply, _MLP_PARAMS, batch, key=jax.random.key(0)
        ),
        "kfac": lambda: gl.curvature.kfac(_MLP.apply, ce, _MLP_PARAMS, batch),
        "ekfac": lambda: gl.curvature.ekfac(_MLP.apply, ce, _MLP_PARAMS, batch),
    }[build]
    with pytest.raises(ValueError, match=r"label 3 at example 2.*0 <= label < 3"):
        call()
    with pytest.raises(ValueError, match=r"label -1 at example 0"):
        gl.curvature.ggn(_MLP.apply, ce, _MLP_PARAMS, (X, jnp.array([-1, 0, 0, 0])))


def test_kfac_bad_options_and_models():
    ce = "softmax_cross_entropy"
    batch = (X, jnp.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"fisher_type='type1'.*'type2', 'mc', 'empirical'"):
        gl.curvature.kfac(_MLP.apply, ce, _MLP_PARAMS, batch, fisher_type="type1")
    with pytest.raises(ValueError, match=r"kfac_approx='sum'.*'expand', 'reduce'"):
        gl.curvature.ekfac(_MLP.apply, ce, _MLP_PARAMS, batch, kfac_approx="sum")
    with pytest.raises(ValueError, match=r"requires the argument 'key'"):
        gl.curvature.kfac(_MLP.apply, ce, _MLP_PARAMS, batch, fisher_type="mc")
    with pytest.raises(ValueError, match=r"fisher_type='mc' needs loss_fn"):
        gl.curvature.kfac(
            _MLP.apply,
            lambda o, t: jnp.sum(o),
            _MLP_PARAMS,
            batch,
            fisher_type="mc",
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match=r"num_samples=0 is out of range"):
        gl.curvature.kfac(_MLP.apply, ce, _MLP_PARAMS, batch, num_samples=0)
    with pytest.raises(ValueError, match=r"found no supported layer"):
        gl.curvature.kfac(model_fn, ce, PARAMS, (X, jnp.array([0, 1, 1, 0])))
    wrong = {"params": {"kernel": jnp.ones((5, 3)), "bias": jnp.zeros(3)}}
    with pytest.raises(ValueError, match=r"params do not fit model_fn"):
        gl.curvature.kfac(_MLP.apply, ce, wrong, batch)
    kf = gl.curvature.kfac(_MLP.apply, ce, _MLP_PARAMS, batch)
    with pytest.raises(ValueError, match=r"damping=-0.1 is out of range: expected 0.0 <= damping"):
        kf.inverse(-0.1)
    with pytest.raises(ValueError, match=r"damping=-1.0 is out of range"):
        gl.curvature.ekfac(_MLP.apply, ce, _MLP_PARAMS, batch).inverse(-1.0)
