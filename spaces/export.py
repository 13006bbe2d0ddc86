"""Exports that actually run faster than a masked model (DOMAIN.md 1, "What actually runs faster on a CPU").

- :func:`compact`: structured compaction. Hidden units (MLP) or channels (CNN) that are dead are removed and the
  neighbouring dense layers shrink. A unit is dead when its outgoing weights are all zero, or when its incoming
  weights are all zero: its output is then the constant ``relu(bias)``, which is folded exactly into the next
  layer's bias (for a conv followed by a conv, where zero padding makes the constant map non-constant after the
  next conv, only units with ``relu(bias) == 0`` are removed). Outputs equal the masked model's in eval mode.
  In an efficient ensemble (``ensemble_size > 1``) the hidden layers and the head become plain
  :class:`~sparsearch.spaces.ensemble.EnsembleLinear` layers: a unit is removed for every member at once, its
  adapters with it, and a dead unit's per-member constant is folded into the next layer's per-member bias offsets.
  Numeric encodings and cross layers are kept as they are (masked, computing the same function).
- :func:`to_csr`: every linear layer becomes a :class:`CSRLinear` holding its weight in compressed sparse row form
  (an ensemble layer a :class:`CSREnsembleLinear` with its adapters; the per-feature layer of a PLR encoding a
  :class:`CSRNLinear` over its block-diagonal weight). Conv layers and embeddings stay dense. Outputs equal the
  masked model's in eval mode.

Both return new modules (the input is untouched) that ``torch.save``/``torch.load`` and ``state_dict`` round-trip.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .ensemble import EnsembleLinear, MaskedEnsembleLinear
from .masked import MaskedNLinear
from .models import SparseCNN, SparseMLP

#: the layers of an efficient ensemble: a shared weight and each member's adapters ``r``, ``s``, ``c``
_ENSEMBLE_LAYERS = (EnsembleLinear, MaskedEnsembleLinear)


def _plain_linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A size of a 2-d convolution (``kernel_size``, ``stride``, ...: two entries) as the pair ``Conv2d`` takes."""
    height, width = size
    return height, width


def _conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a convolution that has one (SparseCNN's and the plain ones built here)."""
    assert conv.bias is not None, "compact needs convolutions with a bias (SparseCNN's have one)"
    return conv.bias


def _plain_conv(w: torch.Tensor, b: torch.Tensor, like: nn.Conv2d) -> nn.Conv2d:
    padding = like.padding if isinstance(like.padding, str) else _pair(like.padding)
    conv = nn.Conv2d(w.shape[1], w.shape[0], _pair(like.kernel_size), stride=_pair(like.stride), padding=padding,
                     dilation=_pair(like.dilation))
    with torch.no_grad():
        conv.weight.copy_(w)
        _conv_bias(conv).copy_(b)
    return conv


def _shrink_linear_chain(ws: list[torch.Tensor], bs: list[torch.Tensor],
                         adapters: list[list[torch.Tensor]] | None = None,
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[list[torch.Tensor]] | None]:
    """Remove dead hidden units of a chain of linear layers with ReLU between them (in place on copies).

    ``adapters``: per layer ``[r, s, c]`` of an efficient ensemble (layer ``y = s * (W (r * x) + b) + c`` per
    member), sliced with the units and receiving the folded constants; ``None`` for a single network.
    """
    ws = [w.clone() for w in ws]
    bs = [b.clone() for b in bs]
    ads = [[t.clone() for t in a] for a in adapters] if adapters is not None else None
    for i in range(len(ws) - 1):
        w, b, wn = ws[i], bs[i], ws[i + 1]
        dead_in = (w == 0).all(dim=1)
        if ads is None:
            const = torch.relu(b) * dead_in
            bs[i + 1] = bs[i + 1] + wn @ const
        else:  # each member's dead unit outputs its own constant: fold it into that member's offset c
            r, s_, c = ads[i]
            rn, sn, _ = ads[i + 1]
            const = torch.relu(s_ * b + c) * dead_in  # (k, units)
            ads[i + 1][2] = ads[i + 1][2] + sn * ((rn * const) @ wn.t())
        unused = (wn == 0).all(dim=0)
        keep = ~(dead_in | unused)
        if not keep.any():
            keep[0] = True
            w[0].zero_()
            b[0] = 0.0
            wn[:, 0] = 0.0
            if ads is not None:
                ads[i][2][:, 0] = 0.0
        ws[i], bs[i] = w[keep], b[keep]
        ws[i + 1] = wn[:, keep]
        if ads is not None:
            ads[i][1], ads[i][2] = ads[i][1][:, keep], ads[i][2][:, keep]
            ads[i + 1][0] = ads[i + 1][0][:, keep]
    return ws, bs, ads


def _plain_ensemble_linear(w: torch.Tensor, b: torch.Tensor, adapters: list[torch.Tensor]) -> EnsembleLinear:
    r, s, c = adapters
    lin = EnsembleLinear(w.shape[1], w.shape[0], r.shape[0])
    with torch.no_grad():
        for name, value in (("weight", w), ("bias", b), ("r", r), ("s", s), ("c", c)):
            getattr(lin, name).copy_(value)
    return lin


@torch.no_grad()
def compact_linear_chain(chain: nn.Sequential) -> nn.Sequential:
    """A plain ``Linear -> ReLU -> ... -> Linear`` chain without its dead hidden units (the same outputs).

    :func:`compact` for networks that are not a :class:`SparseMLP`: a hidden unit whose incoming weights are all
    zero outputs a constant, folded into the next layer's bias, and a unit no later weight reads is dropped.

    Example:
        >>> chain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> with torch.no_grad():
        ...     _ = chain[0].weight[:5].zero_()
        >>> x = torch.randn(3, 4)
        >>> small = compact_linear_chain(chain)
        >>> small[0].out_features, bool(torch.allclose(small(x), chain(x), atol=1e-6))
        (3, True)
    """
    lins = [m for m in chain if isinstance(m, nn.Linear)]
    ws, bs, _ = _shrink_linear_chain([m.weight.detach() for m in lins], [m.bias.detach() for m in lins])
    out: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        out.append(_plain_linear(w, b))
        if i < len(ws) - 1:
            out.append(nn.ReLU())
    return nn.Sequential(*out).eval()


def compact(model: nn.Module) -> nn.Module:
    """Structured compaction of a :class:`SparseMLP` or :class:`SparseCNN` (see the module docstring).

    Returns a model of the same class whose masked layers are replaced by smaller plain ``nn.Linear``/``nn.Conv2d``
    layers and whose dropout layers are removed (eval-mode equivalent).
    """
    if not isinstance(model, (SparseMLP, SparseCNN)):
        raise TypeError(f"compact supports SparseMLP and SparseCNN, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    if isinstance(out, SparseCNN):
        _compact_cnn(out)
    layers = [m for m in out.hidden if isinstance(m, nn.Linear)] + [out.head]
    ensemble = getattr(out, "ensemble_size", 1) > 1
    adapters = [_adapters(m) for m in layers] if ensemble else None
    ws, bs, ads = _shrink_linear_chain([m.weight.detach() for m in layers], [m.bias.detach() for m in layers],
                                       adapters)

    def plain(j: int) -> nn.Linear:
        return _plain_ensemble_linear(ws[j], bs[j], ads[j]) if ads is not None else _plain_linear(ws[j], bs[j])

    new_hidden: list[nn.Module] = []
    k = 0
    for m in out.hidden:
        if isinstance(m, nn.Linear):
            new_hidden.append(plain(k))
            k += 1
        elif not isinstance(m, nn.Dropout):
            new_hidden.append(m)
    out.hidden = nn.Sequential(*new_hidden)
    out.head = plain(len(ws) - 1)
    return out


def _adapters(layer: nn.Linear) -> list[torch.Tensor]:
    """``[r, s, c]`` of a layer of an efficient ensemble (every linear layer of one is)."""
    assert isinstance(layer, _ENSEMBLE_LAYERS), f"an ensemble's layer is a {type(layer).__name__}"
    return [layer.r.detach(), layer.s.detach(), layer.c.detach()]


def _compact_cnn(model: SparseCNN) -> None:
    feats = list(model.features)
    convs = {i: m for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)}  # position in feats -> convolution
    first_lin = next(m for m in model.hidden if isinstance(m, nn.Linear))
    ws = [m.weight.detach().clone() for m in convs.values()]
    bs = [_conv_bias(m).detach().clone() for m in convs.values()]
    lw, lb = first_lin.weight.detach().clone(), first_lin.bias.detach().clone()
    positions = model.pool_size**2
    for j in range(len(ws)):
        w, b = ws[j], bs[j]
        dead_in = (w == 0).flatten(1).all(dim=1)
        if j + 1 < len(ws):
            wn = ws[j + 1]
            unused = (wn == 0).transpose(0, 1).flatten(1).all(dim=1)
            removable = (dead_in & (torch.relu(b) == 0)) | unused
        else:
            # last conv -> ReLU -> pools -> flatten (pool_size^2 positions per channel) -> linear: constants fold
            lw4 = lw.reshape(lw.shape[0], -1, positions)
            const = torch.relu(b) * dead_in
            lb = lb + (lw4.sum(dim=2) * const).sum(dim=1)
            unused = (lw4 == 0).all(dim=2).all(dim=0)
            removable = dead_in | unused
        keep = ~removable
        if not keep.any():
            keep[0] = True
            w[0].zero_()
            b[0] = 0.0
        ws[j], bs[j] = w[keep], b[keep]
        if j + 1 < len(ws):
            ws[j + 1] = ws[j + 1][:, keep]
        else:
            lw = lw.reshape(lw.shape[0], -1, positions)[:, keep].reshape(lw.shape[0], -1)
    for k, (i, conv) in enumerate(convs.items()):
        feats[i] = _plain_conv(ws[k], bs[k], conv)
    model.features = nn.Sequential(*feats)
    hidden = list(model.hidden)
    pos = hidden.index(first_lin)
    hidden[pos] = _plain_linear(lw, lb)
    model.hidden = nn.Sequential(*hidden)


class CSRLinear(nn.Module):
    """A linear layer whose weight is stored in CSR form (buffers ``crow``, ``col``, ``values``)."""

    # buffers: declared, else nn.Module.__getattr__ types them as Tensor | Module
    crow: torch.Tensor
    col: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = weight.detach().to_sparse_csr()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("crow", csr.crow_indices().to(torch.int32).clone())
        self.register_buffer("col", csr.col_indices().to(torch.int32).clone())
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def weight_csr(self) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                self.crow, self.col, self.values, (self.out_features, self.in_features), check_invariants=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sparse.mm(self.weight_csr(), x.t()).t()
        return y + self.bias if self.bias is not None else y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a CSR layer's buffers are sized by its number of non-zeros: take the incoming sizes
        for name in ("crow", "col", "values"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and incoming.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(incoming))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


class CSREnsembleLinear(CSRLinear):
    """:class:`CSRLinear` shared by the members of an efficient ensemble, with their adapters ``r``, ``s``, ``c``
    (buffers); input and output ``(batch, k, features)`` as :class:`~sparsearch.spaces.ensemble.EnsembleLinear`."""

    r: torch.Tensor  # buffers, declared as in CSRLinear
    s: torch.Tensor
    c: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, r: torch.Tensor, s: torch.Tensor,
                 c: torch.Tensor) -> None:
        super().__init__(weight, bias)
        self.ensemble_size = int(r.shape[0])
        for name, value in (("r", r), ("s", s), ("c", c)):
            self.register_buffer(name, value.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, k, _ = x.shape
        y = super().forward((x * self.r).reshape(batch * k, -1)).reshape(batch, k, -1)
        return y * self.s + self.c


class CSRNLinear(CSRLinear):
    """A :class:`~sparsearch.spaces.masked.MaskedNLinear` in CSR form: its block-diagonal weight over the flattened
    ``(batch, n * in)`` input; input ``(batch, n, in)``, output ``(batch, n * out)``."""

    def __init__(self, layer: MaskedNLinear) -> None:
        super().__init__(layer.block_diagonal(), layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


@torch.no_grad()
def to_csr(model: nn.Module) -> nn.Module:
    """Copy ``model`` with every ``nn.Linear`` (masked or not) replaced by a :class:`CSRLinear` (eval mode), every
    ensemble layer by a :class:`CSREnsembleLinear` and every per-feature layer by a :class:`CSRNLinear`."""
    out = copy.deepcopy(model).eval()

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, _ENSEMBLE_LAYERS):
                setattr(parent, name, CSREnsembleLinear(child.weight, child.bias, child.r, child.s, child.c))
            elif isinstance(child, MaskedNLinear):
                setattr(parent, name, CSRNLinear(child))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, CSRLinear(child.weight, child.bias))
            else:
                swap(child)

    swap(out)
    return out
