"""Train and evaluate one trial config: the function every search worker calls."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sparsearch.errors import DataError

from . import accounting as acc
from .allocator import reuse_freed_memory
from .config import TrialConfig
from .data import ImageData, TabularData
from .ensemble import EnsembleLinear, MaskedEnsembleLinear, member_losses
from .export import compact, to_csr
from .methods import make_method
from .metrics import METRICS, classification_metrics
from .models import SparseCNN, SparseMLP, iso_flop_widths
from .numeric import make_numeric_encoding
from .sparsifier import Sparsifier

#: Latency is measured on this many rows (or fewer) ...
LATENCY_BATCH = 64
#: ... as the median of this many runs after one warm-up.
LATENCY_RUNS = 5


@dataclass(frozen=True, eq=False)
class TrialOutcome:
    """What a trained trial returns to the controller.

    Attributes:
        metrics: the kept model's validation metrics (its epoch's) plus sparsity, size, FLOP and latency figures
            (names in ``METRICS``), and ``best_epoch``, the epoch kept (a record, not an objective).
        history: one dict per epoch: ``epoch`` (from 1), the validation metrics and ``best`` (1.0 for the epoch
            kept, else 0.0).
        accounting: JSON-serialisable details: per-layer table, sizes on disk, latencies of exports, schedule
            (with ``best_epoch``, ``selected_by`` and ``final_from_epoch``).
        model: the kept (masked) model, or ``None`` when ``return_model=False``.
        best_epoch: the epoch whose model is kept (see :func:`train_and_evaluate`).
    """

    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    accounting: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    best_epoch: int = 0


#: The validation metrics computed after every epoch: the ones a best epoch can be selected by.
EPOCH_METRICS = ("val_auc", "val_logloss", "val_accuracy")


def selection_metric(objectives: tuple[str, ...] | list[str]) -> str | None:
    """The metric that picks a trial's best epoch: its first objective that is a validation metric (``None``
    when none is, e.g. a study that minimises only model size: then the last epoch is kept).

    In a multi-objective study the other objectives are properties of the model's size and cost, which are the
    same for every epoch at the final sparsity, so the best epoch by the first validation objective is never
    dominated by another qualifying epoch (a second validation objective does not vote).

    Example:
        >>> selection_metric(["nnz_params", "val_logloss", "val_auc"])
        'val_logloss'
    """
    return next((o for o in objectives if o in EPOCH_METRICS), None)


def model_inputs(data: TabularData | ImageData) -> tuple[torch.Tensor, ...]:
    """The tensors a model built by :func:`build_model` takes for ``data``: ``(categorical, numeric)`` codes and
    numbers for tabular data (codes as they are, int32 or int64; numbers float32), ``(x,)`` for images."""
    if isinstance(data, TabularData):
        # int32 or int64 codes as they are (embeddings take either): no per-trial int64 copy of the table
        return (torch.from_numpy(np.ascontiguousarray(data.categorical)),
                torch.from_numpy(np.ascontiguousarray(data.numeric, dtype=np.float32)))
    return (torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32)),)


def build_model(config: TrialConfig, data: TabularData | ImageData, *, numeric_mean: np.ndarray | None = None,
                numeric_std: np.ndarray | None = None) -> SparseMLP | SparseCNN:
    """The model a config describes, sized for ``data`` (SparseMLP for tabular data, SparseCNN for images).

    A tabular model's numeric statistics are fitted on ``data`` (the training rows): the standardisation
    (``numeric_mean``/``numeric_std`` buffers) and the numeric encoding's quantiles or bins
    (:func:`~sparsearch.spaces.numeric.make_numeric_encoding`). ``numeric_mean`` and ``numeric_std`` (one value
    per numeric column) replace the standardisation measured on ``data``: a caller that streams more rows than
    it holds (``sparsearch refit``) measures them in one pass and passes a bounded sample of the rows as ``data``.
    Weights are initialised from torch's global generator (seed it for a reproducible model).
    """
    widths = list(config.widths)
    if config.iso_flop and config.is_sparse:
        widths = iso_flop_widths(widths, config.target_sparsity)
    if isinstance(data, TabularData):
        if config.model != "mlp":
            raise DataError(f"model {config.model!r} cannot train on tabular data; use model = \"mlp\"")
        n_out = 1 if data.n_classes == 2 else data.n_classes
        num = data.numeric.astype(np.float64)
        mean = torch.tensor(num.mean(axis=0) if num.shape[0] else np.zeros(num.shape[1]), dtype=torch.float32)
        std = torch.tensor(num.std(axis=0) if num.shape[0] else np.ones(num.shape[1]), dtype=torch.float32)
        if numeric_mean is not None:
            mean = torch.as_tensor(np.asarray(numeric_mean, dtype=np.float32).reshape(num.shape[1]))
        if numeric_std is not None:
            std = torch.as_tensor(np.asarray(numeric_std, dtype=np.float32).reshape(num.shape[1]))
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        # fitted on ``data``: the training rows (quantiles, bins); ``None`` for the standardised scalar
        encoder = make_numeric_encoding(config.numeric_encoding, num, bins=config.numeric_bins,
                                        d_embedding=config.numeric_embedding_dim, sigma=config.plr_sigma)
        return SparseMLP(data.cardinalities, data.numeric.shape[1], widths, n_out,
                         embedding_dim=config.embedding_dim, dropout=config.dropout,
                         prune_embeddings=config.prune_embeddings, numeric_mean=mean, numeric_std=std,
                         numeric_encoder=encoder, fm_dim=config.fm_dim, cross_layers=config.cross_layers,
                         cross_rank=config.cross_rank, ensemble_size=config.ensemble_size)
    if isinstance(data, ImageData):
        if config.model != "cnn":
            raise DataError(f"model {config.model!r} cannot train on image data; use model = \"cnn\"")
        channels = widths if widths else [16]
        return SparseCNN(data.x.shape[1], data.x.shape[2], data.n_classes, channels=channels,
                         hidden=max(channels[-1], 32), dropout=config.dropout)
    raise DataError(f"train_and_evaluate needs TabularData or ImageData, got {type(data).__name__}")


def loss_function(n_out: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss ``loss(logits, y)`` for a head of ``n_out`` outputs: binary cross-entropy on the logit
    when ``n_out == 1``, else cross-entropy (``y``: class indices). See :func:`training_loss` for ensembles."""
    if n_out == 1:
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, y: bce(logits.squeeze(1), y.float())
    ce = nn.CrossEntropyLoss()
    return lambda logits, y: ce(logits, y)


class TrainingForward(nn.Module):
    """The forward pass that training differentiates: the model's logits, or for an efficient ensemble
    (``ensemble_size > 1``) each member's logits ``(batch, k, n_out)`` (:meth:`SparseMLP.member_logits`), so that
    :func:`training_loss` averages the members' losses (TabM) instead of taking the loss of their mean.

    A module (not a function) so that a data-parallel wrapper (``DistributedDataParallel``) can wrap it and still
    see every parameter's gradient; it holds the model, it owns no state of its own.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.members = int(getattr(model, "ensemble_size", 1))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.members > 1:
            model = self.model
            assert isinstance(model, SparseMLP), "only a SparseMLP is an efficient ensemble"
            return model.member_logits(*inputs)
        return self.model(*inputs)


def training_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
    """The loss of one batch from :class:`TrainingForward`'s ``logits``: ``loss_fn`` itself, or for an ensemble's
    ``(batch, k, n_out)`` member logits the mean over members of each member's loss (:func:`member_losses`)."""
    if logits.dim() == 3:
        return member_losses(loss_fn, logits.float(), y)
    return loss_fn(logits.float(), y)


def _predict(model: nn.Module, inputs: tuple[torch.Tensor, ...], batch: int = 8192) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, inputs[0].shape[0], batch):
            outs.append(model(*(t[i : i + batch] for t in inputs)))
    model.train()
    return torch.cat(outs).float().cpu().numpy()


def _autocast_dtype(device: torch.device, mixed_precision: bool) -> torch.dtype | None:
    """bfloat16 on a CUDA device that has it, else float16 (with loss scaling); ``None``: full precision."""
    if not mixed_precision or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def evaluate_model(model: nn.Module, data: TabularData | ImageData, *, prefix: str = "test_") -> dict[str, float]:
    """The classification metrics of a trained model on ``data``, named ``<prefix>auc``, ``<prefix>logloss``,
    ``<prefix>accuracy`` (the validation metrics of :func:`train_and_evaluate`, on other rows).

    Used once per study on the held-out test rows: the metric a search selected on is optimistic for the winner.
    """
    if data.n_rows == 0:
        raise DataError("evaluate_model needs at least one row")
    metrics = classification_metrics(data.y, _predict(model, model_inputs(data)))
    return {prefix + k.removeprefix("val_"): v for k, v in metrics.items()}


def make_optimizer(name: str, params: Iterable[torch.Tensor], *, lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam or SGD (momentum 0.9), fused when torch supports it on this device.

    Fused matters for sparse training on CPU: the default multi-tensor Adam takes ``sqrt`` of the zeroed second
    moments of pruned weights, and ``sqrt(0)`` runs about 5x slower than on normal numbers, which made a 90%-sparse
    optimizer step twice as slow as the dense one. The fused kernel is both faster and insensitive to zeros.
    """
    params = list(params)

    def build(fused: bool | None) -> torch.optim.Optimizer:  # fused=None: torch's default implementation
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, fused=fused)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)

    try:
        return build(fused=True)
    except (RuntimeError, TypeError, ValueError):  # fused unsupported here: the default implementation
        return build(fused=None)


def _optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    return make_optimizer(config.optimizer, model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def lr_at(config: TrialConfig, step: int, total: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total`` under ``config.lr_schedule``.

    ``constant`` keeps ``config.lr``; ``cosine`` decays it from ``config.lr`` to 0 over the ``total`` steps.

    Example:
        >>> c = TrialConfig(lr=0.1, lr_schedule="cosine")
        >>> [round(lr_at(c, s, 4), 4) for s in range(4)]
        [0.1, 0.0854, 0.05, 0.0146]
    """
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; allowed: constant, cosine")


def train_and_evaluate(
    config: TrialConfig,
    train: TabularData | ImageData,
    val: TabularData | ImageData,
    *,
    seed: int | None = 0,
    threads: int | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    return_model: bool = True,
    measure_latency: bool = True,
    device: str | torch.device = "cpu",
    mixed_precision: bool = False,
    select: str | None = "val_auc",
) -> TrialOutcome:
    """Build the config's model for ``train``, train it sparsely, evaluate on ``val`` after every epoch, and keep
    the best epoch's model.

    The kept model is the one of the epoch with the best ``select`` value (in its natural direction,
    :data:`METRICS`; the earliest on ties) among the epochs that end at the final sparsity: for GMP, those that
    end after its last mask update (never a denser epoch from before the pruning window closes); for dense,
    static, SET and RigL every epoch (their sparsity is final from the first step); with
    ``dense_finetune_epochs``, only the dense fine-tuning epochs. Its weights and masks are restored at the end,
    and the returned metrics, accounting, latencies and model describe it. Only end-of-epoch evaluations (on all
    validation rows) are candidates; ``callback`` still receives every report.

    Args:
        config: the trial config (see :func:`suggest_config`).
        train, val: :class:`TabularData` or :class:`ImageData` (same kind).
        seed: seeds model init, batch order and the sparsifier (deterministic for a given seed); ``None``: random.
        threads: pin ``torch.set_num_threads`` for the run (restored afterwards). The run also keeps the memory it
            frees for reuse (:func:`sparsearch.spaces.allocator.reuse_freed_memory`, glibc only).
        callback: ``callback(step, metrics)`` after each validation report: ``config.reports_per_epoch`` per
            epoch, evenly spaced in batches, the last at the epoch's end (``step`` counts reports from 1, so it is
            the epoch when there is one report per epoch; ``metrics["epoch"]`` is the fractional epoch). Reports
            inside an epoch use ``config.report_rows`` validation rows (a fixed subset); end-of-epoch reports use
            all of them. Any exception it raises (e.g. ``optuna.TrialPruned``) stops training and propagates.
        return_model: include the trained model in the outcome.
        measure_latency: measure CPU inference latency of the masked, compacted and CSR models (a few runs on a
            small batch); otherwise the latency metrics are absent.
        device: where to train and evaluate (``"cpu"``, ``"cuda:0"``, ...). Masks, random regrowth and the batch
            order are drawn from CPU generators, so a seed gives the same masks on any device. The returned model,
            the accounting and the latencies are on the CPU.
        mixed_precision: on CUDA, run forward passes under ``torch.autocast`` (bfloat16, or float16 with a gradient
            scaler where bfloat16 is missing); ignored on the CPU. Recorded in ``accounting["device"]``.
        select: the validation metric that picks the kept epoch (one of :data:`EPOCH_METRICS`; a study uses
            :func:`selection_metric` of its objectives), or ``None`` to keep the last epoch. A config with
            ``keep_epoch = "last"`` (``[train] keep_epoch``) keeps the last epoch whatever ``select`` says.

    Raises:
        DataError: train and val of different kinds, or without rows.
        ValueError: ``select`` is not a validation metric.
    """
    if select is not None and select not in EPOCH_METRICS:
        raise ValueError(f"select must be one of {', '.join(EPOCH_METRICS)} or None, got {select!r}")
    if getattr(config, "keep_epoch", "best") == "last":
        select = None
    if type(train) is not type(val):
        raise DataError(f"train and val must be the same kind, got {type(train).__name__} and {type(val).__name__}")
    if train.n_rows == 0 or val.n_rows == 0:
        raise DataError(f"train and val need rows, got {train.n_rows} and {val.n_rows}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        # freed batch memory stays for the next batch instead of being page-faulted in again (spaces.allocator)
        with torch.random.fork_rng(devices=[]), reuse_freed_memory():
            if seed is not None:
                torch.manual_seed(seed)
            return _run(config, train, val, seed=seed, callback=callback, return_model=return_model,
                        measure=measure_latency, device=torch.device(device), mixed_precision=mixed_precision,
                        select=select)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)


class _BestEpoch:
    """The best qualifying epoch so far and a copy of its model's state (weights and mask buffers)."""

    def __init__(self, select: str | None) -> None:
        self.select = select
        self.maximize = select is not None and METRICS[select] == "maximize"
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] | None = None

    def better(self, metrics: dict[str, float]) -> bool:
        if not self.epoch or self.select is None:  # the first candidate, or keep the last one
            return True
        new, old = metrics[self.select], self.metrics[self.select]
        if math.isnan(new) or math.isnan(old):
            return math.isnan(old) and not math.isnan(new)
        return new > old if self.maximize else new < old

    def offer(self, epoch: int, metrics: dict[str, float], model: nn.Module, *, last: bool) -> None:
        if not self.better(metrics):
            return
        self.epoch, self.metrics = epoch, metrics
        # the last epoch's model is the one in hand: no copy needed
        self.state = None if last else {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)
            self.state = None


def _run(config, train, val, *, seed, callback, return_model, measure, device, mixed_precision,
         select) -> TrialOutcome:
    t_start = time.perf_counter()
    model = build_model(config, train)
    n_out = model.head.out_features
    loss_fn = loss_function(n_out)
    forward = TrainingForward(model)
    x_train, x_val = model_inputs(train), model_inputs(val)
    y_train = torch.from_numpy(train.y.astype(np.int64))
    n = train.n_rows
    batch = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = steps_per_epoch * config.epochs
    positions = acc.output_positions(model, x_train)  # on the CPU, before the model moves
    dense_macs = acc.dense_macs(model, positions)
    x_val_cpu = x_val
    if device.type != "cpu":
        model.to(device)
        x_train = tuple(t.to(device) for t in x_train)
        x_val = tuple(t.to(device) for t in x_val)
        y_train = y_train.to(device)
    amp_dtype = _autocast_dtype(device, mixed_precision)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    optimizer = _optimizer(config, model)  # after the move: its state lives with the parameters

    sparse = config.is_sparse
    sparsifier = Sparsifier(
        model, pattern=config.pattern, distribution=config.distribution, criterion=config.criterion,
        optimizer=optimizer, seed=seed, nm_keep=config.nm_keep, nm_group=config.nm_group,
        erk_power=config.erk_power, scales=sparsifier_scales(config, model),
    )
    method = make_method(
        config.method if sparse else "dense", target_sparsity=config.target_sparsity, schedule=config.schedule,
        start_frac=config.start_frac, end_frac=config.end_frac, mask_updates=config.mask_updates,
        dst_interval=config.dst_interval, dst_alpha=config.dst_alpha,
    )
    method.setup(sparsifier, total_steps)
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))

    history: list[dict[str, float]] = []
    train_flops = 0.0
    step = 0
    macs_now = acc.sparse_macs(model, positions)
    updates_seen = method.n_updates
    last_metrics: dict[str, float] = {}
    total_epochs = config.epochs + (config.dense_finetune_epochs if sparse else 0)
    finetune_from = config.epochs + 1 if total_epochs > config.epochs else None
    best = _BestEpoch(select)
    reports = max(1, int(getattr(config, "reports_per_epoch", 1)))
    # mid-epoch reports after these batches (1-based); the epoch's last batch always reports, on every row
    report_after = {math.ceil(steps_per_epoch * k / reports) for k in range(1, reports)} - {steps_per_epoch}
    y_rep, x_rep = val.y, x_val
    rows = getattr(config, "report_rows", None)
    if report_after and rows is not None and rows < val.n_rows:
        pick = np.sort(np.random.default_rng(0).choice(val.n_rows, rows, replace=False))  # same for every trial
        y_rep, x_rep = val.y[pick], tuple(t[torch.from_numpy(pick).to(t.device)] for t in x_val)
    n_reports = 0
    all_steps = steps_per_epoch * total_epochs  # the LR schedule spans every step, fine-tuning too
    lr_at(config, 0, all_steps)  # an unknown schedule fails before any training
    model.train()
    for epoch in range(1, total_epochs + 1):
        finetune = epoch > config.epochs
        if finetune and epoch == config.epochs + 1:
            sparsifier.remove_masks()
            macs_now = dense_macs
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch : (b + 1) * batch]
            idx_d = idx.to(device, non_blocking=True)
            with autocast():  # an efficient ensemble trains on the mean of its members' losses (TabM)
                logits = forward(*(t[idx_d] for t in x_train))
            loss = training_loss(loss_fn, logits, y_train[idx_d])
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if config.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, step, all_steps)  # ``step`` counts every batch's optimizer step
            train_flops += 6.0 * macs_now * idx.numel()
            if sparse and not finetune:
                if method.wants_dense_grad(step + 1):
                    sparsifier.capture_dense_grads()
                    train_flops += 2.0 * (dense_macs - macs_now) * idx.numel()
                sparsifier.mask_gradients()
                _step(optimizer, scaler)
                sparsifier.apply_masks()
                step += 1
                method.after_step(step)
                if method.n_updates != updates_seen:
                    updates_seen = method.n_updates
                    macs_now = acc.sparse_macs(model, positions)
            else:
                _step(optimizer, scaler)
                step += 1
            if callback is not None and (b + 1) in report_after:
                n_reports += 1
                partial = classification_metrics(y_rep, _predict(model, x_rep))
                callback(n_reports, {"epoch": epoch - 1 + (b + 1) / steps_per_epoch, **partial})
        last_metrics = classification_metrics(val.y, _predict(model, x_val))
        history.append({"epoch": float(epoch), **last_metrics})
        if callback is not None:
            n_reports += 1
            callback(n_reports, {"epoch": float(epoch), **last_metrics})
        # at the final sparsity: the dense fine-tuning epochs when there are any, else after the last mask update
        final = finetune if finetune_from is not None else step >= method.final_step
        if final:
            best.offer(epoch, last_metrics, model, last=epoch == total_epochs)
    train_seconds = time.perf_counter() - t_start
    best.restore(model)
    for row in history:
        row["best"] = float(row["epoch"] == best.epoch)
    model.eval()
    model.to("cpu")  # exports, latencies and the returned model are on the CPU
    metrics, accounting = account_model(model, config, x_val_cpu, positions, measure=measure)
    accounting["device"] = {"device": str(device), "mixed_precision": str(amp_dtype).removeprefix("torch.")
                            if amp_dtype is not None else "off"}
    metrics.update(best.metrics)
    metrics["best_epoch"] = float(best.epoch)
    metrics["train_flops"] = float(train_flops)  # what training cost: every epoch, the kept one or not
    metrics["train_seconds"] = float(train_seconds)
    final_from = finetune_from or next(e for e in range(1, config.epochs + 1)
                                       if e * steps_per_epoch >= method.final_step)
    accounting["schedule"] = {"total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                              "mask_updates_done": method.n_updates, "method": method.name,
                              "best_epoch": best.epoch, "selected_by": select or "last epoch",
                              "final_from_epoch": final_from}
    return TrialOutcome(metrics=metrics, history=history, accounting=accounting,
                        model=model if return_model else None, best_epoch=best.epoch)


def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        optimizer.step()
    else:  # float16: unscale, skip the step on inf/nan gradients, adapt the scale
        scaler.step(optimizer)
        scaler.update()


def sparsifier_scales(config: TrialConfig, model: nn.Module) -> list[float] | None:
    """The per-layer density scales the :class:`Sparsifier` of ``model`` gets under ``config`` (``None`` unless
    ``config.distribution == "searched"``): the config's ``layer_scales`` for the last layers, 1 for the others
    (pruned embeddings come first)."""
    if config.distribution != "searched":
        return None
    from .masked import masked_modules

    n_layers = len(list(masked_modules(model)))
    scales = list(config.layer_scales)
    # embeddings (when pruned) come first and get scale 1; missing scales default to 1
    return [1.0] * max(0, n_layers - len(scales)) + scales[-n_layers:] if scales else None


def account_model(model: nn.Module, config: TrialConfig, x_val: tuple[torch.Tensor, ...],
                  positions: dict[str, int], *, measure: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """The sparsity, size, FLOP and (with ``measure``) CPU latency figures every trained model reports.

    Args:
        model: the trained (masked) model, on the CPU.
        config: its trial config (its target sparsity and the config go into the figures).
        x_val: :func:`model_inputs` of some rows; the latency is measured on the first :data:`LATENCY_BATCH`.
        positions: ``accounting.output_positions(model, inputs)`` (output positions per layer, for the FLOPs).
        measure: measure the latency of the masked, compacted and CSR models.

    Returns:
        ``(metrics, accounting)``: the metric values (names in ``METRICS``) and the JSON-serialisable details
        (per-layer table, sizes, compact shapes, ensemble, latency).
    """
    summary = acc.sparsity_summary(model)
    table = acc.layer_table(model, positions)
    flops_dense = 2.0 * sum(r["macs_dense"] for r in table)
    flops_sparse = 2.0 * sum(r["macs_sparse"] for r in table)
    metrics: dict[str, float] = {
        "target_sparsity": float(config.target_sparsity if config.is_sparse else 0.0),
        **summary,
        "flops_dense": flops_dense,
        "flops_sparse": flops_sparse,
        "flops_ratio": flops_sparse / flops_dense if flops_dense else 1.0,
    }
    accounting: dict[str, Any] = {"layers": table, "config": config.to_dict()}
    csr = to_csr(model)
    compacted = compact(model)
    sizes = {
        "masked_bytes": acc.saved_size(model.state_dict()),
        "compact_bytes": acc.saved_size(compacted.state_dict()),
        "csr_bytes": acc.saved_size(csr.state_dict()),
    }
    # dense size: fp32 weights without masks; sparse size: the smaller of the exports
    sizes["dense_bytes"] = int(4 * summary["n_params"])
    accounting["sizes"] = sizes
    accounting["compact_shapes"] = [list(m.weight.shape) for m in compacted.modules()
                                    if isinstance(m, (nn.Linear, nn.Conv2d))]
    metrics["params_compact"] = float(sum(p.numel() for p in compacted.parameters()))
    # an efficient ensemble: shared weights are counted once (in n_params, nnz_*); the members' own adapters here
    member_params = sum(m.adapter_params() for m in model.modules()
                        if isinstance(m, (EnsembleLinear, MaskedEnsembleLinear)))
    metrics["params_members"] = float(member_params)
    accounting["ensemble"] = {"size": int(getattr(model, "ensemble_size", 1)), "member_params": int(member_params)}
    metrics["size_dense_bytes"] = float(sizes["dense_bytes"])
    metrics["size_sparse_bytes"] = float(min(sizes["compact_bytes"], sizes["csr_bytes"]))
    if measure:
        rows = min(LATENCY_BATCH, x_val[0].shape[0])
        sample = tuple(t[:rows] for t in x_val)
        lat = {}
        for key, mod in (("latency_ms", model), ("latency_compact_ms", compacted), ("latency_csr_ms", csr)):
            mod.eval()
            lat[key] = acc.measure_latency(functools.partial(mod, *sample), runs=LATENCY_RUNS)
        metrics.update(lat)
        accounting["latency"] = {**lat, "batch": rows, "runs": LATENCY_RUNS, "threads": torch.get_num_threads()}
    return metrics, accounting
