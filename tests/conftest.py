"""Shared pytest fixtures for gradlab's test suite."""

from __future__ import annotations

import os
import shutil
import tempfile

# Keep XLA from grabbing every core per process when tests run under pytest-xdist.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

# One XLA compilation cache per test run, shared by the xdist workers and every process they
# start (notebook kernels, CLI and multi-device subprocesses inherit the environment): many
# tests compile the same programs (a transform rebuilt with the same settings, a smoke
# reproduction run by its notebook and by the CLI). It starts empty at every run, so nothing
# carries over between runs. Programs under 0.1 s of compile time are not worth the write.
# The pytest process makes it before it starts the workers, which inherit the variable.
_OWNED = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWNED = tempfile.mkdtemp(prefix="gradlab-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWNED
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the environment above: jax reads it at import)
import pytest  # noqa: E402

# The tests run thousands of tiny programs, so XLA's compile time dominates their run time:
# skip the expensive LLVM backend passes (HLO-level simplification and fusion still run, so
# results are the same floating-point operations). Only this process is affected: notebook
# kernels and CLI subprocesses, which run longer programs, keep the default optimisation (except
# the compile-bound smoke notebooks named in tests/experiments/test_notebooks.py).
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_unconfigure(config):
    """The process that made the run's compilation cache removes it."""
    if _OWNED:
        shutil.rmtree(_OWNED, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_leaked_x64():
    """Fail loudly if 64-bit floats are already on when a test starts.

    ``jax_enable_x64`` is process-global: a module that switches it on at import (collection
    imports every module of a worker, doctest modules included) silently runs every later test
    of that worker in float64, hiding dtype bugs and skewing float32 tolerances. Tests that need
    float64 request the ``x64`` fixture, which switches it back off; this fixture runs first
    (autouse), so it sees the state left by collection and by earlier tests.
    """
    if jax.config.jax_enable_x64:
        # Switch it off first so that one leak is reported once, not by every later test.
        jax.config.update("jax_enable_x64", False)
        pytest.fail(
            "jax_enable_x64 was already True when this test started: something switched "
            "64-bit floats on globally (at import, or a test without restoring it). Use the "
            "x64 fixture instead, which restores the setting.",
            pytrace=False,
        )


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
