"""Shared pytest fixtures for gradlab's test suite."""

from __future__ import annotations

import os

# Keep XLA from grabbing every core per process when tests run under pytest-xdist.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax
import pytest

# The tests run thousands of tiny programs, so XLA's compile time dominates their run time:
# skip the expensive LLVM backend passes (HLO-level simplification and fusion still run, so
# results are the same floating-point operations). Only this process is affected: notebook
# kernels and CLI subprocesses, which run longer programs, keep the default optimisation.
jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def x64():
    """Run the test body with 64-bit floats enabled, restoring the previous setting after."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def key():
    """A fixed PRNG key for deterministic tests."""
    return jax.random.key(0)
