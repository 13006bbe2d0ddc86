"""Data preparation for a study: load or generate, split, rank features on the training rows (cached), encode.

The evaluation protocol: one deterministic, stratified split per data fingerprint and seed into train /
validation / test rows (``[train] val_fraction``, ``test_fraction``; an image set with its own test set uses it).
Everything fitted sees the training rows only: the prefilter and pair rankings are computed on them (the ranking
records the rows it used), and so is the encoder (vocabularies, the hashing decision, medians, missing-value
indicators, the float bins of crosses, which crossed values are frequent enough to get their own code);
validation and test rows are encoded as the packaged model encodes new rows. Trials train on the training rows and are selected on the validation rows; the test rows are used once, when
an execution ends, to evaluate the best trial(s).

The ranking is the prefilter: only the ``top_k`` best-ranked features reach the search. When ``top_k`` is a
searched range, the data is encoded once for its largest value and each trial keeps its own first ``k`` columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sparsearch._frames import to_polars
from sparsearch._types import JSONDict, ParamValue
from sparsearch.errors import DataError, first_line
from sparsearch.search.encoding_cache import encoded_key, load_encoded, max_bytes, store_encoded
from sparsearch.search.spec import StudySpec

if TYPE_CHECKING:
    import polars as pl

    from sparsearch.spaces.data import ImageData, TabularData
    from sparsearch.spaces.encoder import Cross, TabularEncoder

__all__ = ["PreparedData", "add_crosses", "apply_crosses", "cross_recipes", "fit_encoder", "prepare_data",
           "rank_training_pairs", "rank_training_rows", "select_features", "split_digest", "trial_feature_subset",
           "trial_features"]

log = logging.getLogger("sparsearch")


@dataclass(frozen=True)
class PreparedData:
    """What the controller puts in the object store, plus what it logs."""

    train: TabularData | ImageData | None
    """The encoded training rows; ``None`` once the controller has put them in the object store, and in what
    :func:`fit_encoder` returns."""
    val: TabularData | ImageData | None
    fingerprint: str
    n_rows: int
    test: TabularData | ImageData | None = None
    """The held-out test rows (``None`` with ``test_fraction = 0``): evaluated once, for the best trial(s)."""
    split: JSONDict = field(default_factory=dict)
    """How the rows were split: sizes, fractions, seed and a digest of the row indices."""
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    """Row indices of ``train``, ``val`` and ``test`` in the loaded data (driver only; never shipped to workers)."""
    candidates: tuple[str, ...] = ()
    """Features after the prefilter, best first (empty for image data)."""
    crosses: tuple[str, ...] = ()
    """Crossed pair features (``[data] crosses``), best pair first; encoded after the candidates."""
    pairs: pl.DataFrame | None = None
    """The ranked pairs the crosses came from (polars DataFrame) or ``None``."""
    ranking: pl.DataFrame | None = None
    """The full ranking (polars DataFrame) or ``None``."""
    ranking_cached: bool = False
    encoding_cached: bool = False
    """Whether the encoded parts came from the encoding cache (search/encoding_cache.py)."""
    ranking_rows: JSONDict = field(default_factory=dict)
    """The rows the ranking was computed on (``{"rows": "train", "n_rows": ..., "split_digest": ...}``)."""
    timings: dict[str, float] = field(default_factory=dict)
    encoder: TabularEncoder | None = None
    """The fitted :class:`~sparsearch.spaces.encoder.TabularEncoder` (driver only: it packages the best model)."""
    example: pl.DataFrame | None = None
    """A few raw rows of the candidate features (polars; the packaged model's input example)."""


def _load_frame(spec: StudySpec) -> pl.DataFrame:
    from sparsearch.features import DATASETS, read_table

    data = spec.data
    if data.frame is not None:
        df = to_polars(data.frame, "[data] frame")
    elif data.path is not None:
        df = read_table(data.path)
    else:
        params = dict(data.params)
        params.setdefault("seed", spec.study.seed)
        try:
            df = DATASETS[data.generator](**params)  # type: ignore[index]  # the spec requires one here
        except TypeError as exc:
            raise DataError(f"[data] params for generator {data.generator!r}: {exc}") from None
    if data.sql is not None:
        import polars as pl

        try:
            df = pl.SQLContext(data=df, eager=True).execute(data.sql)
        except Exception as exc:  # polars raises SQLInterfaceError, ColumnNotFoundError, ...
            first = first_line(exc)
            raise DataError(f"[data] sql failed: {first[:300]}") from None
        if df.height == 0:
            raise DataError("[data] sql returned no rows")
    if data.max_rows is not None and df.height > data.max_rows:
        df = df.sample(n=data.max_rows, seed=spec.study.seed or 0, shuffle=False)
    return df


def split_digest(idx: tuple[np.ndarray, ...]) -> str:
    """The digest of a split's row indices (train, validation, test), as the run JSON records it (``split.digest``):
    two runs, or a run and a peer, with the same digest scored the same rows."""
    h = hashlib.sha256()
    for part in idx:
        h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def _split_info(idx: tuple[np.ndarray, ...], spec: StudySpec, seed: int, test_source: str) -> JSONDict:
    return {"n_train": int(idx[0].size), "n_val": int(idx[1].size), "n_test": int(idx[2].size),
            "val_fraction": spec.train.val_fraction, "test_fraction": spec.train.test_fraction, "seed": seed,
            "test_source": test_source, "digest": split_digest(idx)}


def _class_codes(df: pl.DataFrame, target: str) -> np.ndarray:
    """Class index of every row (rows with a missing target must be dropped before)."""
    return df[target].rank("dense").to_numpy().astype(np.int64) - 1


def prepare_data(spec: StudySpec, results_dir: Path) -> PreparedData:
    """Load, split, rank on the training rows (cached per data fingerprint and split), prefilter and encode."""
    start = time.perf_counter()
    if spec.data.is_image:
        images = _prepare_images(spec)
        return dataclasses.replace(images, timings={**images.timings, "prepare_s": time.perf_counter() - start})
    max_bytes()  # a bad SPARSEARCH_ENCODING_CACHE_GB is refused before any row is read, not after encoding them
    prepared, df = fit_encoder(spec, results_dir)
    t0 = time.perf_counter()
    # straight into the three parts: no full encoded copy besides them (the frame, the parts and one column at a
    # time is the peak: 9.2 GB measured for clicklog_large's 2M x 316 with int64 codes, where a full copy then subsets
    # peaked near 20 GB; the codes are int32 since, 2.4 GB less)
    ix = prepared.indices
    # the frame holds the crossed columns already: encode them as they are (not computed a second time)
    assert prepared.encoder is not None  # fit_encoder fits one
    plain = dataclasses.replace(prepared.encoder, crosses=())
    # the encoded parts are cached per data, split and fitted encoder (search/encoding_cache.py)
    cache_dir = Path(results_dir) / "cache"
    key = encoded_key(prepared.fingerprint, str(prepared.split.get("digest", "")), prepared.encoder)
    parts = load_encoded(cache_dir, key)
    cached = parts is not None
    if parts is None:
        train, val, test = plain.encode(df, [ix["train"], ix["val"], ix["test"]])
        store_encoded(cache_dir, key, (train, val, test))
    else:
        train, val, test = parts
    timings = {**prepared.timings, "encode_s": prepared.timings["encode_s"] + time.perf_counter() - t0,
               "prepare_s": time.perf_counter() - start}
    return dataclasses.replace(prepared, train=train, val=val, test=test if ix["test"].size else None,
                               timings=timings, encoding_cached=cached)


def _prepare_images(spec: StudySpec) -> PreparedData:
    timings: dict[str, float] = {}
    seed = spec.study.seed or 0
    val_f, test_f = spec.train.val_fraction, spec.train.test_fraction
    from sparsearch.spaces import IMAGE_DATASETS, split_indices

    t0 = time.perf_counter()
    loader = IMAGE_DATASETS[spec.data.generator]  # type: ignore[index]  # image data: always a generator
    images = loader(**spec.data.params)
    own_test = spec.data.generator == "fashion_mnist"
    test: ImageData | None
    if own_test:  # the data set's own test images (all of them: a `limit` shrinks the training part only)
        test = loader(**{k: v for k, v in spec.data.params.items() if k != "limit"}, part="test")
        tr, va, _ = split_indices(images.y, val_f, 0.0, seed)
        te = np.arange(test.n_rows)
        train, val = images.subset(tr), images.subset(va)
    else:
        tr, va, te = split_indices(images.y, val_f, test_f, seed)
        train, val, test = images.subset(tr), images.subset(va), images.subset(te) if te.size else None
    digest = hashlib.sha256(np.ascontiguousarray(images.x).tobytes()[:50_000_000]).hexdigest()[:16]
    timings["load_s"] = time.perf_counter() - t0
    split = _split_info((tr, va, te), spec, seed, "t10k" if own_test else "split")
    return PreparedData(train=train, val=val, test=test, split=split, fingerprint=digest,
                    n_rows=images.n_rows, timings=timings, indices={"train": tr, "val": va, "test": te})


def fit_encoder(spec: StudySpec, results_dir: Path) -> tuple[PreparedData, pl.DataFrame]:
    """Every step of :func:`prepare_data` for tabular data but the encoding: load, split, rank on the training
    rows (cached), prefilter, add crosses and fit the encoder on the training rows.

    Returns the :class:`PreparedData` without encoded parts (``train``, ``val`` and ``test`` are ``None``) and the
    loaded frame (crossed columns added) whose rows ``indices`` index. ``sparsearch refit`` uses it to rebuild the
    study's encoder and split without encoding every row in memory.
    """
    if spec.data.is_image:
        raise DataError("this step needs tabular data; an image study has no encoder")
    timings: dict[str, float] = {}
    seed = spec.study.seed or 0
    val_f, test_f = spec.train.val_fraction, spec.train.test_fraction
    import polars as pl

    from sparsearch.features import RankingCache, data_fingerprint, validate_target
    from sparsearch.spaces import split_indices
    from sparsearch.spaces.encoder import CROSS_MIN_COUNT, TabularEncoder

    t0 = time.perf_counter()
    df = _load_frame(spec)
    target = spec.data.target
    validate_target(df, target)
    df = df.filter(pl.col(target).is_not_null())  # rows without a label are neither trained nor tested on
    timings["load_s"] = time.perf_counter() - t0
    columns = [c for c in (spec.data.features or df.columns) if c != target and c not in spec.data.exclude]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"[data] features: column {missing[0]!r} is not in the data; columns: "
                        f"{', '.join(df.columns[:20])}{' ...' if df.width > 20 else ''}")
    if not columns:
        raise DataError(f"[data]: no feature columns left besides target {target!r}")
    fingerprint = data_fingerprint(df)
    tr, va, te = split_indices(_class_codes(df, target), val_f, test_f, seed)
    split = _split_info((tr, va, te), spec, seed, "split")

    ranking = None
    cached = False
    ranking_rows: JSONDict = {}
    candidates = columns
    if spec.data.prefilter != "none":
        # the same cache as `sparsearch rank --cache`; the data's identity includes the rows ranked (the split)
        cache = RankingCache(results_dir / "cache")
        key = cache.key(f"{fingerprint}/train-rows-{split['digest']}", target=target, method=spec.data.prefilter,
                        options={"columns": columns, "seed": spec.study.seed})
        ranking_rows = {"rows": "train", "n_rows": split["n_train"], "split_digest": split["digest"]}
        t0 = time.perf_counter()
        ranking = cache.load(key)
        cached = ranking is not None
        if ranking is None:
            ranking = rank_training_rows(df, columns, target, tr, spec)
            cache.store(key, ranking)
        timings["rank_s"] = time.perf_counter() - t0
        candidates = ranking.sort("rank")["feature"].to_list()
    if spec.data.top_k is not None:
        candidates = candidates[: spec.data.top_k[1]]

    raw = _detached(df.select(columns).head(5))  # the packaged model's input example
    crosses: list[str] = []
    pairs = None
    recipes: list[Cross] = []
    if spec.data.crosses is not None and spec.data.crosses[1] > 0:
        t0 = time.perf_counter()
        pairs = rank_training_pairs(df, columns, target, tr, spec.data.crosses[1])
        recipes = cross_recipes(df, pairs, rows=tr)
        df, crosses = apply_crosses(df, recipes)
        timings["pairs_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # fitted on the training rows only; validation and test rows encode as the packaged model encodes new rows
    # a crossed value seen fewer than CROSS_MIN_COUNT times among them is out of vocabulary (bounded embeddings)
    encoder = TabularEncoder.fit(df, target, features=[*candidates, *crosses], rows=tr,
                                 min_count=dict.fromkeys(crosses, CROSS_MIN_COUNT),
                                 ordered_ints=spec.data.ordered_ints)
    encoder = encoder.with_crosses(recipes)  # the frame has the crossed columns already: encode() reads them
    timings["encode_s"] = time.perf_counter() - t0
    return PreparedData(train=None, val=None, test=None, split=split, fingerprint=fingerprint, n_rows=df.height,
                        candidates=tuple(candidates), crosses=tuple(crosses), pairs=pairs,
                        ranking=ranking, ranking_cached=cached,
                        ranking_rows=ranking_rows, timings=timings, indices={"train": tr, "val": va, "test": te},
                        encoder=encoder, example=raw), df


def _detached(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a (small) polars frame that shares no memory with the frame it was sliced from.

    A polars slice (``head``, ``select``) is a view: it keeps the whole source frame's buffers alive. The study's
    input example is five rows; as a view it held the 2.6 GB clicklog_large frame for the whole study.
    """
    import io

    import polars as pl

    buf = io.BytesIO()
    frame.write_ipc(buf)
    return pl.read_ipc(buf.getvalue())


def rank_training_rows(df: pl.DataFrame, columns: list[str], target: str, train_rows: np.ndarray,
                       spec: StudySpec) -> pl.DataFrame:
    """The prefilter ranking, computed on the training rows only: labels of validation and test rows never
    reach it (a feature chosen with them would flatter every validation and test metric)."""
    from sparsearch.features import rank_features

    return rank_features(df.select([*columns, target])[train_rows], target, method=spec.data.prefilter,
                         seed=spec.study.seed)


def rank_training_pairs(df: pl.DataFrame, columns: list[str], target: str, train_rows: np.ndarray,
                        k: int) -> pl.DataFrame:
    """The ``k`` best pairs on the training rows only, among all ``columns`` (a pair whose features carry no signal
    alone is cut by a single-feature prefilter): low-rank interactions of two high-cardinality features first,
    then by chance-corrected interaction information (``sparsearch.features.rank_interactions``)."""
    from sparsearch.features import rank_interactions

    return rank_interactions(df.select([*columns, target])[train_rows], target, top=k)


def cross_name(a: str, b: str) -> str:
    return f"{a}*{b}"


def add_crosses(df: pl.DataFrame, pairs: pl.DataFrame, *,
                rows: np.ndarray | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Add one categorical column per ranked pair with a positive score or a low-rank interaction: the two values
    joined (floats by their equal-frequency bin among ``rows`` first, every row when ``None``; labels unused); a
    missing value on either side is a missing cross. The same as :func:`apply_crosses` of :func:`cross_recipes`."""
    return apply_crosses(df, cross_recipes(df, pairs, rows=rows))


def apply_crosses(df: pl.DataFrame, recipes: list[Cross]) -> tuple[pl.DataFrame, list[str]]:
    """``df`` with the crossed columns of fitted :class:`~sparsearch.spaces.encoder.Cross` recipes, computed on
    every row as the packaged model computes them on new rows, and their names."""
    if not recipes:
        return df, []
    return df.with_columns([r.compute(df) for r in recipes]), [r.name for r in recipes]


def cross_recipes(df: pl.DataFrame, pairs: pl.DataFrame, *, rows: np.ndarray | None = None) -> list[Cross]:
    """The crosses of the ranked pairs with a positive score or a low-rank interaction (a pair that adds nothing
    over its two features is not crossed), in rank order, their float bins fitted on ``rows`` (every row when
    ``None``)."""
    from sparsearch.spaces.encoder import Cross

    flagged = pairs.get_column("low_rank").to_list() if "low_rank" in pairs.columns else [False] * pairs.height
    return [Cross.fit(df, cross_name(a, b), a, b, rows=rows)
            for (a, b, score), low_rank in zip(pairs.select("feature_a", "feature_b", "score").iter_rows(), flagged)
            if score > 0 or low_rank]


def trial_features(prepared: PreparedData, k: int | None, c: int | None) -> tuple[str, ...] | None:
    """The features a trial keeps: the first ``k`` candidates (all when None) and the first ``c`` crosses (all when
    None); ``None`` when that is everything."""
    if k is None and c is None:
        return None
    base = prepared.candidates if k is None else prepared.candidates[:k]
    return tuple(base) + tuple(prepared.crosses if c is None else prepared.crosses[:c])


def trial_feature_subset(spec: StudySpec, prepared: PreparedData,
                         params: Mapping[str, ParamValue]) -> tuple[str, ...] | None:
    """The features of the trial with ``params``: its searched ``data.top_k`` (when ``[data] top_k`` is a range)
    and ``data.crosses`` (see :func:`trial_features`); ``None`` for all candidates."""
    top_k = spec.data.top_k
    searched_k = top_k is not None and top_k[0] < top_k[1] and "data.top_k" in params
    k = _int_param(params, "data.top_k") if searched_k else None
    c = _int_param(params, "data.crosses") if "data.crosses" in params else None
    return trial_features(prepared, k, c)


def _int_param(params: Mapping[str, ParamValue], name: str) -> int:
    """The integer parameter ``name`` (``suggest_int`` gave it)."""
    value = params[name]
    if value is None:
        raise TypeError(f"trial parameter {name!r} is None; it must be an integer (suggest_int gives it)")
    return int(value)


def select_features(data: TabularData | ImageData,
                    keep: list[str] | tuple[str, ...] | None) -> TabularData | ImageData:
    """Keep only the named features of an encoded tabular data set (``None``: keep all)."""
    from sparsearch.spaces.data import TabularData

    if keep is None or not isinstance(data, TabularData):  # image data: no named features
        return data
    keep_set = set(keep)
    cat = [i for i, n in enumerate(data.categorical_names) if n in keep_set]
    # a kept numeric feature keeps its missing-value indicator (encode_tabular's "<name>_missing" column)
    num = [i for i, n in enumerate(data.numeric_names)
           if n in keep_set or (n.endswith("_missing") and n.removesuffix("_missing") in keep_set)]
    return dataclasses.replace(
        data,
        categorical=data.categorical[:, cat],
        cardinalities=tuple(data.cardinalities[i] for i in cat),
        categorical_names=tuple(data.categorical_names[i] for i in cat),
        numeric=data.numeric[:, num],
        numeric_names=tuple(data.numeric_names[i] for i in num),
    )
