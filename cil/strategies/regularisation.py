"""Regularisation baselines: a penalty keeps the network close to what it was (EWC, SI) or
to what it predicted (LwF); no data are stored.

Defaults follow Avalanche's reference split-MNIST experiments where they exist
(ContinualAI/continual-learning-baselines, ``experiments/split_mnist/*.py``, and Avalanche's
own ``examples/*_mnist.py``); each default says where it comes from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from cil.errors import UserError
from cil.strategies.registry import StrategyContext, register
from cil.typecheck import NonNegativeFloat, PositiveFloat, Range

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


def _check_ewc(params: dict, *, where: str, image_shape: tuple[int, int, int] | None) -> None:
    if params["mode"] == "online" and params["decay_factor"] is None:
        raise UserError(f"{where}: mode 'online' needs decay_factor (a number in (0, 1], e.g. 0.1)")
    if params["mode"] == "separate" and params["decay_factor"] is not None:
        raise UserError(f"{where}: decay_factor is used only with mode 'online'; remove it or set mode: online")


@register("ewc", help="Elastic Weight Consolidation (Kirkpatrick et al. 2017)", check=_check_ewc)
def build_ewc(
    ctx: StrategyContext,
    *,
    ewc_lambda: NonNegativeFloat = 0.4,  # Avalanche examples/ewc_mnist.py, split MNIST default
    mode: Literal["separate", "online"] = "separate",  # one penalty per experience, as in the paper
    # only for mode: online (Schwarz et al. 2018); Avalanche suggests 0.1
    decay_factor: Annotated[float, Range(gt=0, max=1)] | None = None,
) -> SupervisedTemplate:
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS): a quadratic penalty
    weighted by the diagonal Fisher information anchors weights important to old experiences."""
    from avalanche.training import EWC

    return EWC(**ctx.template_kwargs(ctx.make_model()), ewc_lambda=ewc_lambda, mode=mode,
               decay_factor=decay_factor)


@register("si", help="Synaptic Intelligence (Zenke et al. 2017)")
def build_si(
    ctx: StrategyContext,
    *,
    si_lambda: NonNegativeFloat = 1.0,  # continual-learning-baselines split_mnist/synaptic_intelligence.py
    eps: PositiveFloat = 1e-3,  # same file ('si_eps'); damping of the importance denominator
) -> SupervisedTemplate:
    """Synaptic Intelligence (Zenke, Poole & Ganguli 2017, ICML): per-weight importance is the
    path integral of gradient times update, and a quadratic penalty protects important weights.
    Avalanche's strategy with its plugin's weight snapshot fixed for CPU (see _si_plugin)."""
    from avalanche.training.templates import SupervisedTemplate

    kwargs = ctx.template_kwargs(ctx.make_model())
    kwargs["plugins"] = [*(kwargs["plugins"] or []), _si_plugin(si_lambda=si_lambda, eps=eps)]
    return SupervisedTemplate(**kwargs)


def _si_plugin(*, si_lambda: float, eps: float):
    """Avalanche 0.6's SynapticIntelligencePlugin with one fix. It keeps weights as
    ``param.detach().cpu().flatten()``, which copies only from a GPU: on CPU both the weights
    before each step and the anchor at the start of an experience are views of the live
    parameters. The optimiser's in-place step moves them too, so every step measures no
    change (the importance stays zero) and the penalty's distance to the anchor is always
    zero: SI trains exactly as naive fine-tuning. This subclass makes both snapshots copies;
    everything else is Avalanche's."""
    from avalanche.training.plugins import SynapticIntelligencePlugin

    class CopyingSynapticIntelligencePlugin(SynapticIntelligencePlugin):
        def before_training_exp(self, strategy, **kwargs):
            super().before_training_exp(strategy, **kwargs)
            for anchor in self.ewc_data[0].values():
                anchor.data = anchor.data.clone()

        def before_training_iteration(self, strategy, **kwargs):
            super().before_training_iteration(strategy, **kwargs)
            for snapshot in self.syn_data["old_theta"].values():
                snapshot.data = snapshot.data.clone()

    return CopyingSynapticIntelligencePlugin(si_lambda=si_lambda, eps=eps)


class _PerExperience(list):
    """A per-experience list that keeps repeating its last value past its end.

    Avalanche's LwF indexes ``alpha[experience]``; a schedule written for a 5-experience
    protocol must not crash a longer stream.
    """

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, int) and index >= len(self):
            return super().__getitem__(-1)
        return super().__getitem__(index)


def _check_lwf(params: dict, *, where: str, image_shape: tuple[int, int, int] | None) -> None:
    if isinstance(params["alpha"], list) and not params["alpha"]:
        raise UserError(f"{where}.alpha: give a number or a non-empty list, one value per experience")


@register("lwf", help="Learning without Forgetting (Li & Hoiem 2016)", check=_check_lwf)
def build_lwf(
    ctx: StrategyContext,
    *,
    # Per-experience distillation weights of continual-learning-baselines
    # split_mnist/lwf.py, the schedule of van de Ven et al. 2019 ("Three scenarios for
    # continual learning"); a single number applies to every experience.
    alpha: NonNegativeFloat | list[NonNegativeFloat] = [0.0, 0.5, 1.33333, 2.25, 3.2],  # noqa: B006 (read only)
    temperature: PositiveFloat = 2.0,  # same file; also the value of Li & Hoiem 2016
) -> SupervisedTemplate:
    """Learning without Forgetting (Li & Hoiem 2016, ECCV): knowledge distillation from the
    model saved after the previous experience keeps its outputs on old classes."""
    if isinstance(alpha, (list, tuple)):
        alpha = _PerExperience(float(a) for a in alpha)
    from avalanche.training import LwF

    return LwF(**ctx.template_kwargs(ctx.make_model()), alpha=alpha, temperature=temperature)
