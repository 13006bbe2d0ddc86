"""Sparse models: an MLP for tabular/click data and a small CNN for images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .ensemble import MaskedEnsembleLinear, mean_probability_logits
from .masked import MaskedConv2d, MaskedEmbedding, MaskedLinear


def embedding_size(cardinality: int, max_dim: int) -> int:
    """Embedding width for a categorical feature: ``min(max_dim, round(1.6 * cardinality ** 0.56))``, at least 2.

    The rule of thumb is fast.ai's; the cap is the searched ``embedding_dim``.
    """
    return int(max(2, min(max_dim, round(1.6 * max(cardinality, 1) ** 0.56))))


def iso_flop_widths(widths: Sequence[int], sparsity: float) -> list[int]:
    """Sparse-IFT "Sparse Wide": widen each layer by ``sqrt(1 / (1 - s))`` to keep dense-equivalent FLOPs."""
    factor = math.sqrt(1.0 / max(1.0 - sparsity, 1e-6))
    return [max(1, int(round(w * factor))) for w in widths]


class CrossLayer(nn.Module):
    """A low-rank DCN-v2 cross layer (Wang et al. 2021, eq. 1 with ``W = U V``):
    ``x_{l+1} = x_0 * (U (V x_l) + b) + x_l``, with ``V`` (``d -> rank``, no bias) and ``U`` (``rank -> d``)
    masked linear layers, so both are pruned, counted (MACs) and exported like any linear layer.

    Example:
        >>> layer = CrossLayer(6, 2)
        >>> x0 = torch.randn(3, 6)
        >>> layer(x0, x0).shape
        torch.Size([3, 6])
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = MaskedLinear(dim, max(1, min(int(rank), dim)), bias=False)
        self.up = MaskedLinear(self.down.out_features, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.up(self.down(x)) + x


class PairwiseInteraction(nn.Module):
    """Factorization-machine style pairwise products of the categorical embeddings (the dot interaction of DLRM,
    Naumov et al. 2019; FM, Rendle 2010): each embedding is projected to ``dim`` by a masked linear map (the
    embeddings have different widths), and every pair ``i < j`` of features contributes ``<P_i e_i, P_j e_j>`` as
    one input of the MLP, so a user x item affinity can be learnt through the two embeddings.

    The projections are masked layers (pruned, counted, exported); the ``n (n - 1) / 2 * dim`` multiply-adds of
    the products are counted by :attr:`interaction_macs` (they have no weights to prune).

    Example:
        >>> fm = PairwiseInteraction([3, 5, 4], 2)
        >>> fm([torch.zeros(7, 3), torch.zeros(7, 5), torch.zeros(7, 4)]).shape
        torch.Size([7, 3])
    """

    pair_rows: torch.Tensor  # buffers: declared, else nn.Module.__getattr__ types them as Tensor | Module
    pair_cols: torch.Tensor

    def __init__(self, widths: Sequence[int], dim: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(MaskedLinear(int(w), int(dim), bias=False) for w in widths)
        n = len(self.projections)
        self.dim = int(dim)
        self.out_features = n * (n - 1) // 2
        rows, cols = torch.triu_indices(n, n, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)

    @property
    def interaction_macs(self) -> int:
        """Multiply-adds of the pairwise products per sample."""
        return self.out_features * self.dim

    def forward(self, embedded: Sequence[torch.Tensor]) -> torch.Tensor:
        v = torch.stack([p(e) for p, e in zip(self.projections, embedded, strict=True)], dim=1)  # (batch, n, dim)
        return (v[:, self.pair_rows] * v[:, self.pair_cols]).sum(dim=2)


class SparseMLP(nn.Module):
    """Embeddings per categorical feature, encoded numeric inputs, optional pairwise products and DCN-v2 cross
    layers, masked hidden layers and a masked head, optionally as an efficient ensemble of ``k`` members.

    Forward: ``x_0 = [embeddings, numbers]`` (numbers standardised by ``numeric_mean``/``numeric_std``, or encoded
    by ``numeric_encoder``, see :mod:`sparsearch.spaces.numeric`; with ``fm_dim > 0`` also the pairwise products of
    the embeddings, :class:`PairwiseInteraction`), then ``cross_layers`` cross layers (:class:`CrossLayer`), then
    the hidden layers and the head. With ``ensemble_size = k > 1`` the hidden layers and the head are shared by
    ``k`` members with rank-1 adapters (:mod:`sparsearch.spaces.ensemble`); :meth:`member_logits` gives each
    member's logits and ``forward`` the logits of the members' mean probability. The defaults build today's model
    exactly (same modules, same parameter creation order, same ``state_dict`` keys).

    Args:
        cardinalities: number of codes of each categorical feature (embedding table sizes).
        n_numeric: number of numeric inputs.
        widths: hidden layer widths (depth = ``len(widths)``; 0 hidden layers = a linear model on the embeddings).
        n_out: 1 for binary targets (logit), else the number of classes.
        embedding_dim: the cap of each embedding width (see :func:`embedding_size`).
        dropout: dropout after each hidden layer.
        prune_embeddings: use masked embeddings so they count as prunable weights (default: dense embeddings).
        numeric_mean, numeric_std: standardisation of numeric inputs (buffers; fitted on training data).
        numeric_encoder: a fitted numeric encoding module (``None``: the standardised numbers); it reads the
            standardised numbers when its ``reads_standardised`` attribute is true, else the raw ones.
        fm_dim: width of the factorization-machine projections of the embeddings (0: no pairwise products; also
            none with fewer than two categorical features).
        cross_layers, cross_rank: number of low-rank DCN-v2 cross layers before the hidden layers, and their rank.
        ensemble_size: members of the efficient ensemble (1: a single network).

    Example:
        >>> m = SparseMLP([10, 3], 2, [16, 8], 1)
        >>> m(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2)).shape
        torch.Size([4, 1])
    """

    numeric_mean: torch.Tensor  # buffers: declared, else nn.Module.__getattr__ types them as Tensor | Module
    numeric_std: torch.Tensor
    head: nn.Linear  # masked; a plain nn.Linear (EnsembleLinear) once spaces.export.compact shrinks it

    def __init__(
        self, cardinalities: Sequence[int], n_numeric: int, widths: Sequence[int], n_out: int, *,
        embedding_dim: int = 8, dropout: float = 0.0, prune_embeddings: bool = False,
        numeric_mean: torch.Tensor | None = None, numeric_std: torch.Tensor | None = None,
        numeric_encoder: nn.Module | None = None, fm_dim: int = 0, cross_layers: int = 0, cross_rank: int = 16,
        ensemble_size: int = 1,
    ) -> None:
        super().__init__()
        if int(ensemble_size) < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        if int(cross_layers) < 0:
            raise ValueError(f"cross_layers must be >= 0, got {cross_layers}")
        emb_cls = MaskedEmbedding if prune_embeddings else nn.Embedding
        embeddings: list[nn.Embedding] = [emb_cls(int(c), embedding_size(int(c), embedding_dim))
                                          for c in cardinalities]
        self.embeddings = nn.ModuleList(embeddings)
        self.n_numeric = n_numeric
        self.register_buffer("numeric_mean", numeric_mean if numeric_mean is not None else torch.zeros(n_numeric))
        self.register_buffer("numeric_std", numeric_std if numeric_std is not None else torch.ones(n_numeric))
        self.ensemble_size = int(ensemble_size)
        # optional pieces are registered only when used: the default model has today's modules and state_dict keys
        if numeric_encoder is not None:
            self.numeric_encoder = numeric_encoder
        n_num_out = int(getattr(numeric_encoder, "out_features", n_numeric)) if numeric_encoder is not None else n_numeric
        in_dim = sum(e.embedding_dim for e in embeddings) + n_num_out
        if int(fm_dim) > 0 and len(embeddings) >= 2:
            self.fm = PairwiseInteraction([e.embedding_dim for e in embeddings], int(fm_dim))
            in_dim += self.fm.out_features
        self.in_dim = in_dim
        if cross_layers:
            self.cross = nn.ModuleList(CrossLayer(in_dim, cross_rank) for _ in range(int(cross_layers)))
        k = self.ensemble_size

        def linear(n_in: int, n_out: int, first: bool) -> MaskedLinear:
            return MaskedLinear(n_in, n_out) if k == 1 else MaskedEnsembleLinear(n_in, n_out, k, random_signs=first)

        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers += [linear(in_dim, int(w), i == 0), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = int(w)
        self.hidden = nn.Sequential(*layers)
        self.head = linear(in_dim, n_out, not widths)

    def features(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """``x_0`` after the cross layers: the input of the first hidden layer, ``(batch, in_dim)``."""
        parts = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        if self.n_numeric:
            encoder = getattr(self, "numeric_encoder", None)
            if encoder is None:
                parts.append((numeric - self.numeric_mean) / self.numeric_std)
            elif getattr(encoder, "reads_standardised", False):
                parts.append(encoder((numeric - self.numeric_mean) / self.numeric_std))
            else:
                parts.append(encoder(numeric))
        if hasattr(self, "fm"):
            parts.append(self.fm(parts[: len(self.embeddings)]))
        x = torch.cat(parts, dim=1) if parts else numeric
        if hasattr(self, "cross"):
            x0 = x
            for layer in self.cross:
                x = layer(x0, x)
        return x

    def member_logits(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """Each member's logits, ``(batch, k, n_out)`` (``k = 1``: the single network's)."""
        x = self.features(categorical, numeric)
        if self.ensemble_size == 1:
            return self.head(self.hidden(x))[:, None, :]
        return self.head(self.hidden(x[:, None, :].expand(-1, self.ensemble_size, -1)))

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        if self.ensemble_size == 1:
            return self.head(self.hidden(self.features(categorical, numeric)))
        return mean_probability_logits(self.member_logits(categorical, numeric))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) in channels-last layout (stride 1 along channels): a copy unless it already is.

    ``Tensor.contiguous(memory_format=torch.channels_last)`` is not enough for one channel: PyTorch counts an NCHW
    tensor with C = 1 as channels-last already and returns it unchanged, and the CPU convolution then takes its NCHW
    path, which for this model is about 1.5x slower per training batch (fashion_cnn on one thread: 22.6 s against
    15.5 s per quarter epoch, ``bench/results/cnn-step.json``). The layout used to depend on how the images' array
    was made; a pickled copy (Ray's object store, bench_peers' prepared data) came back NCHW. The logits are the
    same up to floating-point rounding (the sums run in another order).
    """
    if x.dim() != 4 or x.stride(1) == 1:
        return x
    out = torch.empty_like(x, memory_format=torch.channels_last)
    out.copy_(x)
    return out


class SparseCNN(nn.Module):
    """A small CNN: masked 3x3 convolutions (each followed by ReLU and, while the map is >= 4 pixels, 2x2 max-pool),
    adaptive average pooling to at most 4x4, one masked hidden linear layer and a masked head.

    Example:
        >>> m = SparseCNN(1, 8, 10, channels=[8, 16], hidden=32)
        >>> m(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    head: nn.Linear  # masked; a plain nn.Linear once spaces.export.compact shrinks it

    def __init__(
        self, in_channels: int, image_size: int, n_classes: int, *, channels: Sequence[int] = (16, 32),
        hidden: int = 64, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for ch in channels:
            layers += [MaskedConv2d(c, int(ch), 3, padding=1), nn.ReLU()]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = int(ch)
        #: side of the average-pooled map fed to the classifier: 2 for 8x8 digits, 4 for 28x28 images
        self.pool_size = max(1, min(size, 4))
        layers += [nn.AdaptiveAvgPool2d(self.pool_size), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        mlp: list[nn.Module] = [MaskedLinear(c * self.pool_size**2, int(hidden)), nn.ReLU()]
        if dropout > 0:
            mlp.append(nn.Dropout(dropout))
        self.hidden = nn.Sequential(*mlp)
        self.head = MaskedLinear(int(hidden), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last whatever layout the images arrive in: the CPU convolutions are fastest in it (see
        # :func:`channels_last`)
        return self.head(self.hidden(self.features(channels_last(x))))
