"""Loaded by varc-cil through the ``cil.strategies`` entry point; importing it registers."""

from __future__ import annotations

from typing import Any

from cil.strategies.registry import StrategyContext, register


@register("lower_lr_naive", help="Fine-tuning with the protocol's learning rate scaled down")
def build_lower_lr_naive(ctx: StrategyContext, *, lr_scale: float = 0.1) -> Any:
    """Naive fine-tuning with a smaller learning rate, a cheap way to slow forgetting down
    (Mirzadeh et al. 2020, "Understanding the Role of Training Regimes in Continual Learning")."""
    from avalanche.training import Naive

    slow = ctx.with_training(lr=ctx.lr * lr_scale)
    return Naive(**slow.template_kwargs(slow.make_model()))
