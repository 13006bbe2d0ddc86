"""A scikit-learn selector around :func:`rank_features` (keeps column names for polars and pandas input)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from sparsearch.errors import SpecError

from ._estimators import get_method
from ._rank import rank_counts
from ._tables import RankOptions, check_options, prepare


class CardinalityAwareSelector(SelectorMixin, BaseEstimator):
    """Keep the ``k`` best features by a cardinality-aware MI method (default ``adjusted-mi``).

    Works on polars and pandas DataFrames (string, integer, boolean and float columns), numpy arrays and scipy
    sparse matrices, inside a ``Pipeline``. After ``fit``: ``scores_`` (in input column order), ``ranking_``
    (the full ranking table), ``n_features_in_`` and, for DataFrames, ``feature_names_in_``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 3, size=(300, 4)); y = (X[:, 2] > 0).astype(int)
        >>> CardinalityAwareSelector(k=1).fit(X, y).get_support().tolist()
        [False, False, True, False]
    """

    def __init__(self, k: int | str = 10, method: str = "adjusted-mi", *, n_bins: int = 16, missing: str = "category",
                 seed: int | None = 0):
        self.k = k
        self.method = method
        self.n_bins = n_bins
        self.missing = missing
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.target_tags.required = True
        return tags

    def fit(self, X: Any, y: Any) -> CardinalityAwareSelector:
        get_method(self.method)
        check_options(self.n_bins, self.missing)
        if not (self.k == "all" or (isinstance(self.k, (int, np.integer)) and not isinstance(self.k, bool) and self.k >= 0)):
            raise SpecError(f"k must be a non-negative integer or 'all', got {self.k!r}")
        if isinstance(X, pl.DataFrame):
            data: Any = X
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
            self.n_features_in_ = X.width
            y_arr = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
        else:
            is_frame = hasattr(X, "iloc") and hasattr(X, "columns")
            Xv, y_arr = validate_data(self, X, y, accept_sparse="csr", dtype=None, ensure_all_finite="allow-nan",
                                      y_numeric=False, multi_output=False)
            data = X if is_frame else Xv
        y_arr = np.asarray(y_arr)
        if y_arr.ndim != 1:
            y_arr = y_arr.ravel()
        src, _, feats, tspec = prepare(data, y_arr, None, self.n_bins, None)
        opts = RankOptions(method=self.method, n_bins=self.n_bins, missing=self.missing, seed=self.seed)
        ranking = rank_counts(src, feats, tspec, opts).table
        order = {name: i for i, name in enumerate(feats)}
        self.scores_ = np.zeros(len(feats))
        self.ranks_ = np.zeros(len(feats), dtype=np.int64)
        for name, score, rank in ranking.select("feature", "score", "rank").iter_rows():
            self.scores_[order[name]] = score
            self.ranks_[order[name]] = rank
        self.ranking_ = ranking
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "ranks_")
        if self.k == "all":
            return np.ones(len(self.ranks_), dtype=bool)
        return self.ranks_ <= self.k

    def transform(self, X: Any) -> Any:
        if isinstance(X, pl.DataFrame):
            check_is_fitted(self, "ranks_")
            if X.width != self.n_features_in_:
                raise ValueError(f"X has {X.width} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input")
            names = self.get_feature_names_out()
            return X.select(list(names))
        if hasattr(X, "iloc") and hasattr(X, "columns"):
            check_is_fitted(self, "ranks_")
            validate_data(self, X, reset=False, dtype=None, ensure_all_finite="allow-nan", accept_sparse="csr",
                          skip_check_array=True)
            return X.loc[:, list(np.asarray(X.columns)[self.get_support()])]
        return super().transform(X)
