"""Data-quality findings computed from the same mergeable counts as the ranking (plus one pair pass)."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import polars as pl

from sparsearch.errors import SpecError

from ._chance import row_sums
from ._greedy import pair_stats
from ._rank import RankState, rank_counts
from ._tables import RankOptions, check_options, prepare

ISSUES = (
    "constant",
    "near-constant",
    "mostly-missing",
    "id-like",
    "rare-dominated",
    "leakage-suspect",
    "duplicate",
    "near-duplicate",
)


def quality_report(
    data: Any,
    target: str,
    *,
    features: list[str] | None = None,
    n_bins: int = 16,
    missing: str = "category",
    batch_size: int = 1_000_000,
    near_constant: float = 0.99,
    mostly_missing: float = 0.5,
    id_like: float = 0.5,
    rare_count: int = 10,
    rare_share: float = 0.5,
    leakage: float = 0.9,
    near_duplicate: float = 0.9,
    max_pairs: int = 50,
    feature_names=None,
    pairs: bool = True,
) -> pl.DataFrame:
    """One row per finding: ``feature, issue, detail, value`` (``issue`` is one of :data:`ISSUES`).

    - ``constant``: one value (missing counts as a value); ``near-constant``: the top value covers at least
      ``near_constant`` of the rows; ``mostly-missing``: missing rate at least ``mostly_missing``;
    - ``id-like``: distinct values at least ``id_like`` times the non-missing rows;
    - ``rare-dominated``: values seen fewer than ``rare_count`` times cover at least ``rare_share`` of the rows
      (and the feature is not ID-like);
    - ``leakage-suspect``: chance-adjusted MI at least ``leakage`` times the target entropy;
    - ``duplicate`` / ``near-duplicate``: chance-adjusted MI between two features over the larger of their
      entropies is 1 / at least ``near_duplicate`` (re-coded copies are found too). Only pairs whose entropies
      differ by at most 15% are checked (pairs with identical per-value class-count multisets first, then
      the closest entropies; at most ``max_pairs``), in one extra pass over the rows, skipped when ``pairs`` is
      False (every other finding comes from the ranking's counts).

    Example:
        >>> import polars as pl
        >>> df = pl.DataFrame({"c": [1] * 100, "a": list(range(100)), "y": [0, 1] * 50})
        >>> sorted(quality_report(df, "y")["issue"].to_list())
        ['constant', 'id-like']
    """
    check_options(n_bins, missing)
    for name, v in [("near_constant", near_constant), ("mostly_missing", mostly_missing), ("id_like", id_like),
                    ("rare_share", rare_share), ("leakage", leakage), ("near_duplicate", near_duplicate)]:
        if not (isinstance(v, (int, float)) and 0.0 < float(v) <= 1.0):
            raise SpecError(f"{name} must be a fraction in (0, 1], got {v!r}")
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 0:
        raise SpecError(f"max_pairs must be a non-negative integer, got {max_pairs!r}")
    src, _, feats, tspec = prepare(data, target, features, n_bins, feature_names)
    state = rank_counts(src, feats, tspec, RankOptions(n_bins=n_bins, missing=missing, batch_size=batch_size))
    return findings(state, near_constant=near_constant, mostly_missing=mostly_missing, id_like=id_like,
                    rare_count=rare_count, rare_share=rare_share, leakage=leakage, near_duplicate=near_duplicate,
                    max_pairs=max_pairs if pairs else 0)


def findings(
    state: RankState,
    *,
    near_constant: float = 0.99,
    mostly_missing: float = 0.5,
    id_like: float = 0.5,
    rare_count: int = 10,
    rare_share: float = 0.5,
    leakage: float = 0.9,
    near_duplicate: float = 0.9,
    max_pairs: int = 50,
) -> pl.DataFrame:
    """The findings of :func:`quality_report` from an existing ranking's counts (``max_pairs=0``: no extra pass)."""
    src, tspec, finals, counts = state.src, state.tspec, state.finals, state.counts
    batch_size = state.options.batch_size
    ranking = state.table
    info = {r["feature"]: r for r in ranking.iter_rows(named=True)}
    rows: list[dict[str, Any]] = []

    def add(feature: str, issue: str, detail: str, value: float) -> None:
        rows.append({"feature": feature, "issue": issue, "detail": detail, "value": float(value)})

    n = counts.n_rows
    for f in finals:
        fc = counts.features[f.name]
        per_value = row_sums(fc.counts)
        n_null = int(fc.nulls.sum())
        sizes = np.append(per_value, n_null) if n_null else per_value
        n_values = int(np.count_nonzero(sizes))
        top_share = float(sizes.max() / n) if n and len(sizes) else 1.0
        if n_values <= 1:
            add(f.name, "constant", f"a single value in {n} rows", 1.0)
        elif top_share >= near_constant:
            add(f.name, "near-constant", f"the most frequent value covers {top_share:.2%} of rows", top_share)
        if f.missing_rate >= mostly_missing:
            add(f.name, "mostly-missing", f"{f.missing_rate:.2%} of rows are missing", f.missing_rate)
        non_null = n - n_null
        ratio = f.cardinality / non_null if non_null else 0.0
        is_id = non_null > 0 and f.cardinality > 1 and ratio >= id_like and not f.numeric
        if is_id:
            add(f.name, "id-like", f"{f.cardinality} distinct values in {non_null} non-missing rows ({ratio:.0%})", ratio)
        rare = float(per_value[per_value < rare_count].sum() / n) if n else 0.0
        if not is_id and not f.numeric and rare >= rare_share:
            add(f.name, "rare-dominated", f"values seen < {rare_count} times cover {rare:.0%} of rows", rare)
        r = info[f.name]
        hy = r["target_entropy"]
        adj = r["adjusted_mi"]
        if hy > 0 and adj >= leakage * hy:
            add(f.name, "leakage-suspect", f"adjusted MI {adj:.4g} nats is {adj / hy:.0%} of the target entropy {hy:.4g}", adj / hy)
    schema = {"feature": pl.String, "issue": pl.String, "detail": pl.String, "value": pl.Float64}
    if max_pairs == 0:  # no duplicate checks: everything above came from the counts
        return pl.DataFrame(rows, schema=schema)
    # duplicate pairs: only among features of similar entropy, which any (near) copy must have
    ent = {f.name: info[f.name]["entropy"] for f in finals}
    ordered = sorted((f for f in finals if ent[f.name] > 0), key=lambda f: -ent[f.name])
    # a re-coded exact copy has the same multiset of per-value class counts: such pairs are checked first
    sig = {f.name: hash(np.sort(f.table.view([("", f.table.dtype)] * f.table.shape[1]), axis=0).tobytes())
           for f in ordered}
    cand = []
    for a, b in combinations(range(len(ordered)), 2):
        ha, hb = ent[ordered[a].name], ent[ordered[b].name]
        gap = abs(ha - hb) / max(ha, hb)
        if sig[ordered[a].name] == sig[ordered[b].name]:
            cand.append((-1.0, a, b))
        elif gap <= 0.15:
            cand.append((gap, a, b))
    cand.sort()
    cand = cand[:max_pairs]
    if cand:
        used = sorted({i for _, a, b in cand for i in (a, b)})
        pos = {i: p for p, i in enumerate(used)}
        involved = [ordered[i] for i in used]
        stats = pair_stats(src, involved, tspec, counts, batch_size, pairs=[(pos[a], pos[b]) for _, a, b in cand])
        for (i, j), ps in stats.items():
            a, b = involved[i].name, involved[j].name
            sym = ps.symmetric
            if sym >= 1.0 - 1e-9:
                add(a, "duplicate", f"carries the same information as {b!r} (re-coded copy)", sym)
            elif sym >= near_duplicate:
                add(a, "near-duplicate", f"{sym:.0%} of the information of {a!r} and {b!r} is shared", sym)
    return pl.DataFrame(rows, schema=schema)
