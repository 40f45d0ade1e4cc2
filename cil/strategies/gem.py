"""Gradient-episodic-memory baselines: stored samples constrain the direction of each
update instead of being trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cil.strategies.registry import StrategyContext, register
from cil.typecheck import NonNegativeFloat, PositiveInt

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


@register("gem", help="Gradient Episodic Memory (Lopez-Paz & Ranzato 2017)", cost=2)
def build_gem(
    ctx: StrategyContext,
    *,
    patterns_per_exp: PositiveInt = 256,  # Avalanche examples/gem_agem_mnist.py, split MNIST (93.3% reported there)
    memory_strength: NonNegativeFloat = 0.5,  # same file; margin added to the projected gradient
) -> SupervisedTemplate:
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017, NeurIPS): a quadratic program
    projects each gradient so that the loss on every past experience's memory does not rise.
    Needs the ``quadprog`` solver."""
    from avalanche.training import GEM

    return GEM(**ctx.template_kwargs(ctx.make_model()), patterns_per_exp=patterns_per_exp,
               memory_strength=memory_strength)


@register("agem", help="Averaged GEM (Chaudhry et al. 2019)", cost=3)
def build_agem(
    ctx: StrategyContext,
    *,
    patterns_per_exp: PositiveInt = 256,  # Avalanche examples/gem_agem_mnist.py, split MNIST
    sample_size: PositiveInt = 256,  # same file: memory samples drawn per step for the reference gradient
) -> SupervisedTemplate:
    """Averaged GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019, ICLR): one reference
    gradient from a random memory sample replaces GEM's per-experience constraints; the
    update is projected only when it points against it."""
    from avalanche.training import AGEM

    return AGEM(**ctx.template_kwargs(ctx.make_model()), patterns_per_exp=patterns_per_exp,
                sample_size=sample_size)
