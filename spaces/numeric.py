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
    def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        """Row-wise ``np.interp``: ``x`` (features, n), ``xp`` (features, q) non-decreasing, ``fp`` (q,)."""
        q = xp.shape[1]
        hi = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, q - 1)
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
        u = (0.5 * (forward - backward)).clamp(_QUANTILE_BOUND, 1.0 - _QUANTILE_BOUND)
        return (math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)).t().to(x.dtype)


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
