from __future__ import annotations

import numpy as np
import polars as pl
import pytest


def make_frame(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    """A click-like frame whose target depends on two categorical features and one numeric feature."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 20, n)
    b = rng.integers(0, 5, n)
    noise = rng.integers(0, 50, n)
    x = rng.normal(size=n)
    effect_a = np.linspace(-2, 2, 20)[a]
    logit = effect_a + (b == 3) * 1.5 + 0.8 * x - 0.5
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pl.DataFrame({
        "a": [f"a{v}" for v in a], "b": b.astype(np.int64), "noise": noise.astype(np.int64), "x": x, "y": y,
    })


@pytest.fixture(scope="session")
def frame() -> pl.DataFrame:
    return make_frame()


@pytest.fixture(scope="session")
def tabular(frame):
    from sparsearch.spaces import encode_tabular

    return encode_tabular(frame, "y")


@pytest.fixture(scope="session")
def tab_split(tabular):
    return tabular.split(0.25, seed=0)


@pytest.fixture(scope="session")
def digits():
    from sparsearch.spaces import load_digits_data

    return load_digits_data()
