"""The shared error builders name the argument, the value and what is allowed."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from gradlab._src import errors


def test_out_of_range_message_format():
    msg = errors.out_of_range_message("num_matvecs", 0, 1, 4096)
    assert msg == "num_matvecs=0 is out of range: expected 1 <= num_matvecs <= 4096"


def test_bad_choice_lists_valid_values():
    with pytest.raises(ValueError, match=r"which='biggest'.*'largest', 'smallest'"):
        errors.check_choice("which", "biggest", ("largest", "smallest"))
    assert errors.check_choice("which", "largest", ("largest", "smallest")) == "largest"


@pytest.mark.parametrize("value", [0, -3, 5000])
def test_check_int_range(value):
    with pytest.raises(ValueError, match=rf"k={value} is out of range"):
        errors.check_int("k", value, 1, 4096)


@pytest.mark.parametrize("value", [1.5, "3", None, True])
def test_check_int_type(value):
    with pytest.raises(TypeError, match="k="):
        errors.check_int("k", value, 1)


def test_check_int_accepts_numpy_integers():
    assert errors.check_int("k", np.int64(3), 1) == 3


def test_check_real_open_bounds_and_arrays():
    with pytest.raises(ValueError, match="0.0 < learning_rate"):
        errors.check_real("learning_rate", 0.0, 0.0, lo_open=True)
    with pytest.raises(ValueError, match="NaN"):
        errors.check_real("eps", float("nan"))
    traced_like = jnp.asarray(-1.0)  # arrays pass through unchecked (inject_hyperparams)
    assert errors.check_real("learning_rate", traced_like, 0.0) is traced_like


def test_structure_mismatch_prints_both_structures():
    like = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    with pytest.raises(TypeError) as info:
        errors.check_same_structure("v", {"w": jnp.zeros((2, 3))}, like)
    text = str(info.value)
    assert "got:" in text and "expected:" in text and "float32[3]" in text
    with pytest.raises(ValueError, match="v does not match"):
        errors.check_same_structure("v", {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}, like)
    errors.check_same_structure("v", like, like)


def test_check_leading_axis():
    assert errors.check_leading_axis("batch", (jnp.zeros((4, 2)), jnp.zeros(4))) == 4
    with pytest.raises(ValueError, match=r"different leading.*\[0\]: 4.*\[1\]: 5"):
        errors.check_leading_axis("batch", (jnp.zeros((4, 2)), jnp.zeros(5)))
    with pytest.raises(ValueError, match="scalar"):
        errors.check_leading_axis("batch", (jnp.zeros(()),))
    with pytest.raises(ValueError, match="no array leaves"):
        errors.check_leading_axis("batch", ())


def test_check_scalar_output():
    errors.check_scalar_output("loss_fn", jnp.zeros(()))
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar.*\(3,\)"):
        errors.check_scalar_output("loss_fn", jnp.zeros(3))
