"""Rehearsal baselines: a bounded buffer of past samples is mixed into training (Replay,
DER) or is all that is trained on (GDumb). Buffer sizes count samples, not classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cil.strategies.registry import StrategyContext, register
from cil.typecheck import NonNegativeFloat, PositiveInt

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


@register("replay", help="Experience replay from a random buffer split evenly over experiences (Rolnick et al. 2019)")
def build_replay(
    ctx: StrategyContext,
    *,
    mem_size: PositiveInt = 200,  # Avalanche's Replay default; the split-MNIST protocol also runs 500
    batch_size_mem: PositiveInt | None = None,  # buffer samples per step; None = the training minibatch (Avalanche)
) -> SupervisedTemplate:
    """Experience replay (Rolnick et al. 2019, "Experience Replay for Continual Learning"):
    each minibatch of the new experience is trained together with ``batch_size_mem`` samples
    from a buffer of ``mem_size`` past samples, split evenly over the experiences seen."""
    from avalanche.training import Naive, Replay
    from avalanche.training.plugins import ReplayPlugin

    if batch_size_mem is None:
        return Replay(**ctx.template_kwargs(ctx.make_model()), mem_size=mem_size)
    kwargs = ctx.template_kwargs(ctx.make_model())
    plugin = ReplayPlugin(mem_size=mem_size, batch_size_mem=batch_size_mem)
    kwargs["plugins"] = [*(kwargs["plugins"] or []), plugin]
    return Naive(**kwargs)


@register("gdumb", help="GDumb: retrain from scratch on a class-balanced greedy buffer (Prabhu et al. 2020)")
def build_gdumb(
    ctx: StrategyContext,
    *,
    mem_size: PositiveInt = 4400,  # continual-learning-baselines split_mnist/gdumb.py
) -> SupervisedTemplate:
    """GDumb (Prabhu, Torr & Dokania 2020, ECCV): greedily keep a class-balanced buffer of
    ``mem_size`` samples and, at every experience, train a freshly initialised model on the
    buffer alone (for the protocol's epochs)."""
    from avalanche.training import GDumb

    return GDumb(**ctx.template_kwargs(ctx.make_model()), mem_size=mem_size)


@register("der", help="Dark Experience Replay (Buzzega et al. 2020)")
def build_der(
    ctx: StrategyContext,
    *,
    mem_size: PositiveInt = 200,  # Avalanche DER default; the smallest buffer of Buzzega et al. 2020
    batch_size_mem: PositiveInt | None = None,  # replayed samples per step; None = the training minibatch size
    alpha: NonNegativeFloat = 0.1,  # Avalanche DER default: weight of the logit-matching (MSE) term
    beta: NonNegativeFloat = 0.5,  # Avalanche DER default: weight of the replayed-label CE term (DER++; 0 = plain DER)
) -> SupervisedTemplate:
    """Dark Experience Replay++ (Buzzega et al. 2020, NeurIPS): replayed samples are trained to
    match the logits recorded when they were stored (``alpha``) and their labels (``beta``)."""
    from avalanche.training import DER

    return DER(**ctx.template_kwargs(ctx.make_model()), mem_size=mem_size,
               batch_size_mem=batch_size_mem, alpha=alpha, beta=beta)
