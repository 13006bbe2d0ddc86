"""Generated tabular data sets with known feature roles (the ground truth for tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from sparsearch.errors import SpecError


def _zipf_probs(k: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1, dtype=np.float64) ** s
    return p / p.sum()


def _draw(rng: np.random.Generator, k: int, n: int, skew: float | None) -> np.ndarray:
    """n codes in [0, k): uniform when ``skew`` is None, else Zipf-like with exponent ``skew``, randomly re-coded."""
    if skew is None:
        return rng.integers(0, k, size=n, dtype=np.int64)
    cdf = np.cumsum(_zipf_probs(k, skew))
    codes = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), k - 1)
    return rng.permutation(k)[codes]


def _check_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")


def make_click_log(
    n_rows: int = 50_000,
    *,
    n_informative: int = 6,
    n_redundant: int = 2,
    n_noise: int = 30,
    n_numeric: int = 2,
    max_cardinality: int = 20_000,
    positive_rate: float = 0.1,
    seed: int | None = 0,
    effect_scale: float = 1.0,
    n_interactions: int = 0,
    interaction_scale: float = 1.0,
    return_probability: bool = False,
) -> pl.DataFrame | tuple[pl.DataFrame, np.ndarray]:
    """A click-log-like table with target ``click`` (0/1, low positive rate) and features whose roles are named.

    - ``inf_<i>``: informative categoricals (Int32 codes), cardinalities geometrically spaced from 2 up to
      ``min(5000, max_cardinality)``, Zipf-like frequencies. Each value has a random effect on the click logit
      (logit scale 0.55, or 0.4 for the ones that get redundant copies, so each alone carries a weak but clearly
      learnable signal).
    - ``red_<i>_of_inf_<j>``: redundant re-coded copies of the last (highest-cardinality) informative features,
      which are given the weakest effect so that a copy ranks right below its original, not among the informative
      six: ``red_0`` is an exact re-coded copy (it ties its original; ties keep column order), later ones are near
      copies (15% of rows re-drawn). They are placed after the informative columns.
    - ``noise_<i>_c<card>``: pure noise, cardinalities geometrically spaced from 2 to ``max_cardinality``,
      alternating uniform and Zipf-skewed (exponent 1.1).
    - ``num_<i>``: float features; ``num_0`` is informative (linear effect 0.5 on the logit, with 2% missing),
      every other ``num_<i>`` is standard-normal noise.

    - ``pair_<i>a_c<k>``, ``pair_<i>b_c<k>`` (``n_interactions`` pairs, 4 and 6 levels, uniform): a planted
      interaction. The pair's joint value has a random effect (logit scale ``interaction_scale``) that is
      double-centred, so neither feature has any effect alone: only the pair carries signal. Drawn from a
      generator of their own, so the other columns do not change with ``n_interactions``.

    ``effect_scale`` multiplies every effect (e.g. 0.3 gives weak features that a subsample of the rows cannot
    separate from high-cardinality noise). The intercept is solved so that the mean click rate equals
    ``positive_rate``. ``return_probability=True`` returns ``(frame, p)`` with every row's true click probability
    (the AUC of ``p`` is the ceiling any model of these features can reach).

    Example:
        >>> df = make_click_log(2_000, n_noise=4, seed=1)
        >>> df.columns[:3], df["click"].mean() < 0.2
        (['inf_0', 'inf_1', 'inf_2'], True)
    """
    _check_int("n_rows", n_rows, 10)
    _check_int("n_informative", n_informative, 0)
    _check_int("n_redundant", n_redundant, 0)
    _check_int("n_noise", n_noise, 0)
    _check_int("n_numeric", n_numeric, 0)
    _check_int("max_cardinality", max_cardinality, 2)
    if not (0.0 < positive_rate < 1.0):
        raise SpecError(f"positive_rate must be in (0, 1), got {positive_rate!r}")
    if not (isinstance(effect_scale, (int, float)) and not isinstance(effect_scale, bool) and effect_scale >= 0):
        raise SpecError(f"effect_scale must be a number >= 0, got {effect_scale!r}")
    _check_int("n_interactions", n_interactions, 0)
    if not (isinstance(interaction_scale, (int, float)) and not isinstance(interaction_scale, bool)
            and interaction_scale >= 0):
        raise SpecError(f"interaction_scale must be a number >= 0, got {interaction_scale!r}")
    if n_redundant and not n_informative:
        raise SpecError("n_redundant > 0 needs n_informative > 0 (a redundant feature copies an informative one)")
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    logit = np.zeros(n_rows)
    top = min(5000, max_cardinality)
    cards = np.unique(np.round(np.geomspace(2, top, max(n_informative, 1))).astype(int))[:n_informative]
    while len(cards) < n_informative:
        cards = np.append(cards, cards[-1] + 1)
    inf_codes = []
    for i, k in enumerate(cards):
        x = _draw(rng, int(k), n_rows, 1.05)
        effect = rng.normal(size=int(k))
        weights = np.bincount(x, minlength=int(k)) / n_rows
        effect = (effect - np.sum(weights * effect)) / np.sqrt(np.sum(weights * (effect - np.sum(weights * effect)) ** 2) + 1e-12)
        scale = effect_scale * (0.4 if i >= n_informative - n_redundant else 0.55)
        logit += scale * effect[x]
        cols[f"inf_{i}"] = x.astype(np.int32)
        inf_codes.append((x, int(k)))
    for r in range(n_redundant):
        j = n_informative - 1 - (r % n_informative)
        x, k = inf_codes[j]
        copy = rng.permutation(k)[x]
        if r > 0:
            redraw = rng.random(n_rows) < 0.15
            copy[redraw] = rng.integers(0, k, size=int(redraw.sum()))
        cols[f"red_{r}_of_inf_{j}"] = copy.astype(np.int32)
    if n_interactions:
        rng_pairs = np.random.default_rng(None if seed is None else [seed, 7919])
        for i in range(n_interactions):
            ka, kb = 4, 6
            a, b = rng_pairs.integers(0, ka, n_rows), rng_pairs.integers(0, kb, n_rows)
            table = rng_pairs.normal(size=(ka, kb))
            table = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
            table /= table.std() + 1e-12
            logit += interaction_scale * table[a, b]
            cols[f"pair_{i}a_c{ka}"] = a.astype(np.int32)
            cols[f"pair_{i}b_c{kb}"] = b.astype(np.int32)
    noise_cards = np.round(np.geomspace(2, max_cardinality, max(n_noise, 1))).astype(int)[:n_noise]
    for i, k in enumerate(noise_cards):
        skew = None if i % 2 == 0 else 1.1
        cols[f"noise_{i}_c{int(k)}"] = _draw(rng, int(k), n_rows, skew).astype(np.int32)
    numeric: dict[str, np.ndarray] = {}
    for i in range(n_numeric):
        z = rng.normal(size=n_rows)
        if i == 0:
            logit += effect_scale * 0.5 * z
            z = z.copy()
            z[rng.random(n_rows) < 0.02] = np.nan
        numeric[f"num_{i}"] = z
    intercept = _solve_intercept(logit, positive_rate)
    p = 1.0 / (1.0 + np.exp(-(logit + intercept)))
    click = (rng.random(n_rows) < p).astype(np.int8)
    df = pl.DataFrame({**cols, **{k: v for k, v in numeric.items()}})
    df = df.with_columns(pl.col(c).fill_nan(None) for c in numeric).with_columns(pl.Series("click", click))
    # the true click probability of every row: the ceiling any model of these features can reach (benchmarks)
    return (df, p) if return_probability else df


def _solve_intercept(logit: np.ndarray, rate: float) -> float:
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) > rate:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)




def make_affinity_log(
    n_rows: int = 300_000,
    *,
    n_users: int = 2_000,
    n_items: int = 1_500,
    latent_dim: int = 8,
    affinity_scale: float = 1.5,
    id_skew: float | None = None,
    n_context: int = 2,
    n_noise: int = 4,
    positive_rate: float = 0.2,
    seed: int | None = 0,
    return_probability: bool = False,
) -> pl.DataFrame | tuple[pl.DataFrame, np.ndarray]:
    """A user x item click log whose signal is a planted user x item affinity: target ``click`` (0/1).

    - ``user_id`` (``n_users`` levels) and ``item_id`` (``n_items`` levels), Int32, drawn independently with
      popularity uniform (``id_skew=None``) or Zipf-like with exponent ``id_skew``, randomly re-coded. With the
      default sizes a user has 150 rows and an item 200: enough to learn the affinity, while the 15 most frequent
      users and items together cover under 0.01% of the rows' pairs, so a 16-level cap cannot see it. Every user has a latent
      unit vector u and every item a latent unit vector v (``latent_dim`` dimensions); the click logit is
      ``affinity_scale * sqrt(latent_dim) * (u . v)`` (standard deviation about ``affinity_scale``) plus the
      context effects. The vectors have unit norm and the item vectors are centred (their popularity-weighted
      mean is removed before normalising), so a user's click rate averaged over items is nearly the same for every
      user (and likewise per item): the marginals of ``user_id`` and ``item_id`` are nearly uninformative and the
      signal is in the interaction. A model must learn the pair (embeddings and their product, a cross, or
      trees that split on both).
    - ``ctx_<i>_c<k>`` (``n_context``): small categoricals (3 to 24 levels, uniform) with a weak marginal effect
      (logit scale 0.3), so the table has ordinary single-feature signal too.
    - ``noise_<i>_c<k>`` (``n_noise``): pure noise, cardinalities geometrically spaced from 4 to 5,000, half of them
      Zipf-skewed: high-cardinality columns whose pairs must not outrank the planted one.

    The intercept is solved so that the mean click rate equals ``positive_rate``. ``return_probability=True``
    returns ``(frame, p)`` with every row's true click probability (the AUC of ``p`` is the Bayes ceiling).

    Example:
        >>> df = make_affinity_log(2_000, n_users=1_200, n_items=1_100, seed=1)
        >>> df.columns[:2], df["user_id"].n_unique() > 500
        (['user_id', 'item_id'], True)
    """
    _check_int("n_rows", n_rows, 10)
    _check_int("n_users", n_users, 2)
    _check_int("n_items", n_items, 2)
    _check_int("latent_dim", latent_dim, 1)
    _check_int("n_context", n_context, 0)
    _check_int("n_noise", n_noise, 0)
    if not (isinstance(affinity_scale, (int, float)) and not isinstance(affinity_scale, bool) and affinity_scale >= 0):
        raise SpecError(f"affinity_scale must be a number >= 0, got {affinity_scale!r}")
    if id_skew is not None and not (isinstance(id_skew, (int, float)) and not isinstance(id_skew, bool)
                                    and id_skew > 0):
        raise SpecError(f"id_skew must be a number > 0 or None (uniform), got {id_skew!r}")
    if not (0.0 < positive_rate < 1.0):
        raise SpecError(f"positive_rate must be in (0, 1), got {positive_rate!r}")
    rng = np.random.default_rng(seed)
    users = _draw(rng, n_users, n_rows, id_skew)
    items = _draw(rng, n_items, n_rows, id_skew)
    u = rng.normal(size=(n_users, latent_dim))
    v = rng.normal(size=(n_items, latent_dim))
    # centre the item vectors on the rows' item mix: sum_j w_j (u . v_j) = u . (sum_j w_j v_j) = 0 for every user,
    # so no user is clicked more than another on average (to first order; likewise the users for every item)
    v -= np.bincount(items, minlength=n_items) @ v / n_rows
    u -= np.bincount(users, minlength=n_users) @ u / n_rows
    u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-12
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
    logit = affinity_scale * np.sqrt(latent_dim) * np.einsum("ij,ij->i", u[users], v[items])
    cols: dict[str, np.ndarray] = {"user_id": users.astype(np.int32), "item_id": items.astype(np.int32)}
    ctx_cards = np.round(np.geomspace(3, 24, max(n_context, 1))).astype(int)[:n_context]
    for i, k in enumerate(ctx_cards):
        x = rng.integers(0, int(k), n_rows)
        effect = rng.normal(size=int(k))
        logit += 0.3 * (effect - effect.mean())[x] / (effect.std() + 1e-12)
        cols[f"ctx_{i}_c{int(k)}"] = x.astype(np.int32)
    noise_cards = np.round(np.geomspace(4, 5_000, max(n_noise, 1))).astype(int)[:n_noise]
    for i, k in enumerate(noise_cards):
        cols[f"noise_{i}_c{int(k)}"] = _draw(rng, int(k), n_rows, None if i % 2 == 0 else 1.1).astype(np.int32)
    p = 1.0 / (1.0 + np.exp(-(logit + _solve_intercept(logit, positive_rate))))
    click = (rng.random(n_rows) < p).astype(np.int8)
    df = pl.DataFrame(cols).with_columns(pl.Series("click", click))
    return (df, p) if return_probability else df


DATASETS: dict[str, Callable[..., pl.DataFrame]] = {"click_log": make_click_log, "affinity_log": make_affinity_log}
"""Tabular generators by name; each takes keyword parameters and ``seed`` and returns a polars DataFrame."""
