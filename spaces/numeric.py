"""Numeric encodings of :class:`~sparsearch.spaces.SparseMLP`: how a number enters the network.

Gorishniy et al. 2022 ("On Embeddings for Numerical Features in Tabular Deep Learning") and TabM (2025) gain most
from encoding each number before the MLP instead of feeding one standardised scalar. The searched choices
(``[space] numeric_encoding``), all fitted on the training rows the model is built with and stored in the
module's ``state_dict`` (buffers), so a packaged model carries them:

- ``standard``: ``(x - mean) / std`` (today's model, the default; no extra module).
- ``quantile``: scikit-learn's ``QuantileTransformer`` (normal output) fitted on the training rows; its quantiles
  are buffers and the transform runs in torch (:class:`QuantileEncoding`), so packaging needs no scikit-learn.
- ``ple``: piecewise-linear encoding with bins from training quantiles (``rtdl_num_embeddings.compute_bins`` and
  ``PiecewiseLinearEncoding``, the paper authors' library). It has no weights: the first masked layer reads the
  ``sum(bins)`` encoded columns, so the weights that read them are prunable and counted like any other.
- ``plr``: periodic embeddings, PLR (:class:`PeriodicEncoding`): ``ReLU(Linear_f([cos(2 pi c_f x), sin(2 pi c_f
  x)]))`` per feature ``f`` on the standardised number, with learned frequencies ``c_f``. Written here rather than
  taken from ``rtdl_num_embeddings.PeriodicEmbeddings`` because its per-feature linear layer must be a masked
  layer (:class:`~sparsearch.spaces.masked.MaskedNLinear`) to be pruned, counted and exported to CSR.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from ._registry import Registry
from .masked import MaskedNLinear

NUMERIC_ENCODINGS: Registry[str] = Registry("numeric encoding")
for _name in ("standard", "quantile", "ple", "plr"):
    NUMERIC_ENCODINGS.register(_name)(_name)

#: Frequencies per feature of the PLR encoding (Gorishniy et al. use 16 to 96; 16 keeps small models small).
PLR_FREQUENCIES = 16
#: Quantiles and bins are estimated on at most this many training rows (a seeded sample beyond it): plenty for
#: 1,000 quantiles, and it bounds the per-trial cost and torch.quantile's 2**24-element limit.
FIT_ROWS = 1_000_000
#: Clip of the quantile transform's uniform value before the normal quantile function (scikit-learn's bound).
_QUANTILE_BOUND = 1e-7


def quantile_count(n_rows: int) -> int:
    """Quantiles of the ``quantile`` encoding for ``n_rows`` training rows: ``max(min(n // 30, 1000), 10)``
    (TabM's and RealMLP's setting), never more than the rows.

    Example:
        >>> quantile_count(100), quantile_count(6000), quantile_count(10**7)
        (10, 200, 1000)
    """
    return int(max(2, min(n_rows, max(min(n_rows // 30, 1000), 10))))


class QuantileEncoding(nn.Module):
    """scikit-learn's ``QuantileTransformer(output_distribution="normal")`` transform, run in torch.

    ``quantiles`` (``(n_quantiles, n_features)``, a buffer) come from a transformer fitted on the training rows;
    the forward pass interpolates each value onto ``linspace(0, 1, n_quantiles)`` forwards and backwards and
    averages the two (scikit-learn's handling of repeated quantiles), clips to ``[1e-7, 1 - 1e-7]`` and applies
    the normal quantile function.

    Example:
        >>> x = torch.randn(500, 2)
        >>> enc = QuantileEncoding.fit(x.numpy())
        >>> enc(x).shape
        torch.Size([500, 2])
    """

    quantiles: torch.Tensor  # a buffer: declared, else nn.Module.__getattr__ types it as Tensor | Module

    def __init__(self, quantiles: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("quantiles", quantiles.detach().to(torch.float32).t().contiguous())  # (features, q)
        self.out_features = int(quantiles.shape[1])

    @classmethod
    def fit(cls, x: np.ndarray, *, seed: int = 0) -> QuantileEncoding:
        """Fit on training rows ``x`` (n, features) with scikit-learn's ``QuantileTransformer``."""
        from sklearn.preprocessing import QuantileTransformer

        x = _fit_rows(np.asarray(x, dtype=np.float64), seed)
        qt = QuantileTransformer(n_quantiles=quantile_count(x.shape[0]), output_distribution="normal",
                                 subsample=10**9, random_state=seed)
        qt.fit(x)
        return cls(torch.from_numpy(qt.quantiles_.astype(np.float32)))

    @staticmethod
    def _count_at_most(xp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per row, how many of ``xp``'s (features, q) non-decreasing values are ``<= x`` (features, n)."""
        return torch.searchsorted(xp, x.contiguous(), right=True)

    @staticmethod
    def _clip(u: torch.Tensor) -> torch.Tensor:
        return u.clamp(_QUANTILE_BOUND, 1.0 - _QUANTILE_BOUND)

    @staticmethod
    def _normal_quantile(u: torch.Tensor) -> torch.Tensor:
        """The standard normal quantile function of ``u`` in ``(0, 1)`` (float64)."""
        return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)

    def _interp(self, x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        """Row-wise ``np.interp``: ``x`` (features, n), ``xp`` (features, q) non-decreasing, ``fp`` (q,)."""
        q = xp.shape[1]
        hi = self._count_at_most(xp, x).clamp(1, q - 1)
        lo = hi - 1
        x_lo, x_hi = xp.gather(1, lo), xp.gather(1, hi)
        width = x_hi - x_lo
        t = torch.where(width > 0, (x - x_lo) / torch.where(width > 0, width, torch.ones_like(width)),
                        torch.zeros_like(x))
        out = fp[lo] + t.clamp(0.0, 1.0) * (fp[hi] - fp[lo])
        out = torch.where(x <= xp[:, :1], fp[0].expand_as(out), out)
        return torch.where(x >= xp[:, -1:], fp[-1].expand_as(out), out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float64 inside: the normal quantile function near the 1e-7 clip needs it (float32 is off by 0.03 there)
        xp = self.quantiles.double()
        ref = torch.linspace(0.0, 1.0, xp.shape[1], dtype=torch.float64, device=x.device)
        xt = x.t().double()
        forward = self._interp(xt, xp, ref)
        backward = self._interp(-xt, -xp.flip(1), -ref.flip(0))
        u = self._clip(0.5 * (forward - backward))
        return self._normal_quantile(u).t().to(x.dtype)


# Wichura's algorithm AS 241 (PPND16, Applied Statistics 37(3), 1988): the normal quantile function as rational
# functions in three ranges, relative error about 1e-16 (the coefficients as printed there, highest degree first)
_AS241_CENTRAL = ((2509.0809287301226727, 33430.575583588128105, 67265.770927008700853, 45921.953931549871457,
                   13731.693765509461125, 1971.5909503065514427, 133.14166789178437745, 3.387132872796366608),
                  (5226.495278852545925, 28729.085735721942674, 39307.89580009271061, 21213.794301586595867,
                   5394.1960214247511077, 687.1870074920579083, 42.313330701600911252, 1.0))
_AS241_INNER_TAIL = ((7.7454501427834140764e-4, 0.0227238449892691845833, 0.24178072517745061177,
                      1.27045825245236838258, 3.64784832476320460504, 5.7694972214606914055,
                      4.6303378461565452959, 1.42343711074968357734),
                     (1.05075007164441684324e-9, 5.475938084995344946e-4, 0.0151986665636164571966,
                      0.14810397642748007459, 0.68976733498510000455, 1.6763848301838038494,
                      2.05319162663775882187, 1.0))
_AS241_OUTER_TAIL = ((2.01033439929228813265e-7, 2.71155556874348757815e-5, 0.0012426609473880784386,
                      0.026532189526576123093, 0.29656057182850489123, 1.7848265399172913358,
                      5.4637849111641143699, 6.6579046435011037772),
                     (2.04426310338993978564e-15, 1.4215117583164458887e-7, 1.8463183175100546818e-5,
                      7.868691311456132591e-4, 0.0148753612908506148525, 0.13692988092273580531,
                      0.59983220655588793769, 1.0))


def _const(value: float | tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``like``'s dtype: a Python float in a traced graph is stored as a float32
    constant by ``torch.onnx.export`` (1 - 1e-7 becomes 1 - 1.19e-7), which float64 code cannot afford."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _rational(r: torch.Tensor, coefficients: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """``P(r) / Q(r)`` by Horner's rule, the coefficients highest degree first."""
    a, b = _const(coefficients[0], r), _const(coefficients[1], r)
    num, den = torch.zeros_like(r) + a[0], torch.zeros_like(r) + b[0]
    for i in range(1, a.shape[0]):
        num = num * r + a[i]
    for i in range(1, b.shape[0]):
        den = den * r + b[i]
    return num / den


def normal_quantile(p: torch.Tensor) -> torch.Tensor:
    """The standard normal quantile function ``Phi^-1(p)`` for ``p`` in ``(0, 1)`` with elementary operations
    only (Wichura 1988, algorithm AS 241 "PPND16": rational functions of ``q = p - 1/2`` for ``|q| <= 0.425``,
    else of ``r = sqrt(-log(min(p, 1 - p)))`` for ``r <= 5`` and beyond; relative error about 1e-16 in float64).

    It equals ``sqrt(2) * torch.erfinv(2 p - 1)`` to float64 rounding, and it exports to ONNX, which has no
    ``erfinv``: :class:`PortableQuantileEncoding` uses it.

    Example:
        >>> p = torch.tensor([1e-7, 0.025, 0.5, 0.975], dtype=torch.float64)
        >>> [round(v, 6) for v in normal_quantile(p).tolist()]
        [-5.199338, -1.959964, 0.0, 1.959964]
    """
    q = p - 0.5
    central = q * _rational(_const(0.180625, p) - q * q, _AS241_CENTRAL)
    r = torch.sqrt(-torch.log(torch.minimum(p, 1.0 - p)))
    tail = torch.where(r <= 5.0, _rational(r - _const(1.6, p), _AS241_INNER_TAIL),
                       _rational(r - 5.0, _AS241_OUTER_TAIL))
    return torch.where(q.abs() <= _const(0.425, p), central, torch.where(q < 0, -tail, tail))


class PortableQuantileEncoding(QuantileEncoding):
    """:class:`QuantileEncoding`'s function with operations every ONNX runtime has: the export form of a
    ``quantile`` encoding (``spaces.portable`` swaps it in; training and the packaged pyfunc keep
    :class:`QuantileEncoding`).

    - ``searchsorted`` becomes a branch-free binary search: ``ceil(log2(q + 1))`` steps of a gather and a
      comparison (the same count of quantiles ``<= x``, exactly, also with repeated quantiles), in
      ``O(features x rows)`` memory where a comparison against every quantile would take ``x q``;
    - ``sqrt(2) erfinv(2u - 1)`` becomes :func:`normal_quantile` (AS 241) of the same float64 ``u``;
    - float64 constants are float64 tensors (see :func:`_const`).
      Precomputing the normal values at the quantile knots and interpolating them would not be the same
      function (the normal quantile is not linear between knots), so the transform is computed, not tabulated.

    Everything else (the interpolation, the averaging of the two directions, the clip) is the inherited code, so
    the output differs from :class:`QuantileEncoding`'s by float64 rounding of the normal quantile only (then
    rounded to float32).
    """

    @classmethod
    def of(cls, encoding: QuantileEncoding) -> PortableQuantileEncoding:
        """The portable form of a fitted ``encoding`` (same quantile buffer)."""
        return cls(encoding.quantiles.detach().t())

    @staticmethod
    def _count_at_most(xp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = xp.shape[1]
        count = torch.zeros(x.shape, dtype=torch.int64, device=x.device)
        step = 1 << (q.bit_length() - 1)  # the largest power of two <= q: the counts 0..q need its bits
        while step:  # invariant: the first ``count`` quantiles are <= x; try to extend it by ``step``
            candidate = count + step
            value = xp.gather(1, (candidate - 1).clamp(max=q - 1))
            count = torch.where((candidate <= q) & (value <= x), candidate, count)
            step >>= 1
        return count

    @staticmethod
    def _clip(u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(u, _const(_QUANTILE_BOUND, u), _const(1.0 - _QUANTILE_BOUND, u))

    @staticmethod
    def _normal_quantile(u: torch.Tensor) -> torch.Tensor:
        return normal_quantile(u)


def _fit_rows(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``x``, or a seeded sample of :data:`FIT_ROWS` of its rows when it has more."""
    if x.shape[0] <= FIT_ROWS:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(x.shape[0], FIT_ROWS, replace=False))]


def ple_bins(x: np.ndarray, n_bins: int) -> list[torch.Tensor]:
    """Bin edges per column for the ``ple`` encoding: ``rtdl_num_embeddings.compute_bins`` on the training rows
    (quantile bins; on a seeded sample of :data:`FIT_ROWS` rows when there are more), with at most ``n_bins``
    bins. A column constant on the training rows gets one bin ``[v, v + 1]`` (the library refuses constant
    columns).

    Example:
        >>> x = np.stack([np.arange(100.0), np.zeros(100)], axis=1)
        >>> [len(b) - 1 for b in ple_bins(x, 4)]
        [4, 1]
    """
    from rtdl_num_embeddings import compute_bins

    t = torch.as_tensor(_fit_rows(np.asarray(x, dtype=np.float32)))
    n_bins = max(2, min(int(n_bins), t.shape[0] - 1))
    varying = [j for j in range(t.shape[1]) if t.shape[0] > 1 and bool((t[:, j] != t[0, j]).any())]
    bins: list[torch.Tensor] = [torch.tensor([float(t[0, j]) if t.shape[0] else 0.0] * 2) + torch.tensor([0.0, 1.0])
                                for j in range(t.shape[1])]
    if varying and t.shape[0] > 2:
        with warnings.catch_warnings():  # a two-valued column gets one bin: fine, the library warns about it
            warnings.filterwarnings("ignore", message=".*just two bin edges.*")
            for j, b in zip(varying, compute_bins(t[:, varying], n_bins), strict=True):
                bins[j] = b.to(torch.float32)
    return bins


class PiecewiseLinear(nn.Module):
    """Piecewise-linear encoding (PLE) with fixed bins: ``rtdl_num_embeddings.PiecewiseLinearEncoding``, whose
    bin edges live in buffers; output ``(n, sum of bins)``.

    Example:
        >>> enc = PiecewiseLinear(ple_bins(np.arange(20.0)[:, None], 4))
        >>> enc(torch.tensor([[0.0], [19.0]])).tolist()
        [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, bins: list[torch.Tensor]) -> None:
        from rtdl_num_embeddings import PiecewiseLinearEncoding

        super().__init__()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*just two bin edges.*")
            self.encoding = PiecewiseLinearEncoding(bins)
        self.out_features = int(sum(len(b) - 1 for b in bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x)


class PeriodicEncoding(nn.Module):
    """PLR embeddings (Gorishniy et al. 2022, the ``PeriodicEmbeddings(lite=False)`` of ``rtdl_num_embeddings``):
    per feature ``f``, ``ReLU(W_f [cos(2 pi c_f x_f), sin(2 pi c_f x_f)] + b_f)`` with ``k`` learned frequencies
    ``c_f ~ N(0, sigma^2)`` and a masked per-feature linear layer ``W_f`` (``2k -> d``); output ``(n, features * d)``.

    Example:
        >>> enc = PeriodicEncoding(3, 4, n_frequencies=8)
        >>> enc(torch.zeros(5, 3)).shape
        torch.Size([5, 12])
    """

    reads_standardised = True  # frequencies are on the scale of the standardised number

    def __init__(self, n_features: int, d_embedding: int, *, n_frequencies: int = PLR_FREQUENCIES,
                 sigma: float = 0.1) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * sigma)
        self.linear = MaskedNLinear(n_features, 2 * n_frequencies, d_embedding)
        self.out_features = n_features * d_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2.0 * math.pi * self.frequencies * x[..., None]
        return torch.relu(self.linear(torch.cat([torch.cos(z), torch.sin(z)], dim=-1)))


def make_numeric_encoding(name: str, train_numeric: np.ndarray, *, bins: int = 16, d_embedding: int = 8,
                          sigma: float = 0.1) -> nn.Module | None:
    """The encoding module of ``name`` fitted on the training rows' numbers (``None`` for ``standard``).

    ``quantile`` and ``ple`` read raw numbers (their statistics are fitted here); ``plr`` reads the standardised
    numbers (the model's mean/std buffers) and has learned weights.
    """
    NUMERIC_ENCODINGS.check(name)
    x = np.asarray(train_numeric, dtype=np.float64)
    if name == "standard" or x.shape[1] == 0:
        return None
    if name == "quantile":
        return QuantileEncoding.fit(x)
    if name == "ple":
        return PiecewiseLinear(ple_bins(x, bins))
    return PeriodicEncoding(x.shape[1], int(d_embedding), sigma=float(sigma))
