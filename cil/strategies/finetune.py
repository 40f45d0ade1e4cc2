"""The two ends of the scale: plain fine-tuning (lower bound) and joint training on all data
seen so far (upper bound)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cil.strategies.registry import StrategyContext, register

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


@register("naive", help="Fine-tuning on each experience, no protection against forgetting (lower bound)")
def build_naive(ctx: StrategyContext) -> SupervisedTemplate:
    """Naive fine-tuning: SGD on each new experience only, the catastrophic-forgetting lower
    bound (McCloskey & Cohen 1989; French 1999)."""
    from avalanche.training import Naive

    return Naive(**ctx.template_kwargs(ctx.make_model()))


@register("cumulative", help="Retrain on the union of all experiences so far (joint upper bound)", cost=3)
def build_cumulative(ctx: StrategyContext) -> SupervisedTemplate:
    """Cumulative (joint) training: each experience trains on all data seen so far, the usual
    upper bound of class-incremental learning (e.g. Lomonaco & Maltoni 2017, CORe50)."""
    from avalanche.training import Cumulative

    return Cumulative(**ctx.template_kwargs(ctx.make_model()))
