"""Pruning criteria: the score of each weight (higher = more important, kept first)."""

from __future__ import annotations

import torch

from ._registry import Registry

CRITERIA: Registry[type[Criterion]] = Registry("criterion")


class Criterion:
    """Base class: implement :meth:`score`."""

    name = "base"
    needs_grad = False

    def score(self, weight: torch.Tensor, grad: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


@CRITERIA.register("magnitude")
class Magnitude(Criterion):
    """``|w|``."""

    name = "magnitude"

    def score(self, weight, grad, generator):
        return weight.detach().abs()


@CRITERIA.register("random")
class Random(Criterion):
    """Uniform random scores from the sparsifier's own seeded generator."""

    name = "random"

    def score(self, weight, grad, generator):
        return torch.rand(weight.shape, generator=generator).to(weight.device)  # CPU generator: same on any device


@CRITERIA.register("saliency")
class Saliency(Criterion):
    """Gradient saliency ``|w * grad|`` (first-order Taylor estimate of the loss change); ``|w|`` without a grad."""

    name = "saliency"
    needs_grad = True

    def score(self, weight, grad, generator):
        if grad is None:
            return weight.detach().abs()
        return (weight.detach() * grad).abs()


def make_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)()
