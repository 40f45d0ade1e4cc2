"""iCaRL: herding exemplars, distillation, and a nearest-mean-of-exemplars classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cil.errors import UserError
from cil.strategies.registry import StrategyContext, register
from cil.typecheck import PositiveInt

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
else:  # the registry resolves hints at import time; avalanche is imported only inside builders
    SupervisedTemplate = Any


@register("icarl", help="iCaRL: exemplars by herding + nearest-mean classifier (Rebuffi et al. 2017)")
def build_icarl(
    ctx: StrategyContext,
    *,
    memory_size: PositiveInt = 2000,  # continual-learning-baselines split_cifar100/icarl.py and the paper (K=2000)
    fixed_memory: bool = True,  # same file: memory_size is shared by all classes seen so far
) -> SupervisedTemplate:
    """iCaRL (Rebuffi, Kolesnikov, Sperl & Lampert 2017, CVPR): the feature extractor learns
    with a sigmoid/BCE loss that distils old-class outputs, exemplars are chosen by herding,
    and prediction is the nearest class mean of exemplar features.

    The protocol's backbone supplies both halves: ``model.features`` is the feature extractor
    and ``model.classifier`` the training-time head; the optimizer covers both. Needs an
    NCScenario stream (``cil.streams.build_stream`` builds one). As in Avalanche, each class
    mean averages the exemplars' features with those of their horizontal mirror images (the
    paper's CIFAR augmentation), for every dataset.
    """
    from avalanche.training import ICaRL

    model = ctx.make_model()
    if not (hasattr(model, "features") and hasattr(model, "classifier")):
        raise UserError(f"strategies.icarl: backbone {ctx.backbone!r} does not expose features/classifier")
    kwargs = ctx.template_kwargs(model)
    del kwargs["model"], kwargs["criterion"]  # iCaRL builds its own model wrapper and loss
    return ICaRL(**kwargs, feature_extractor=model.features, classifier=model.classifier,
                 memory_size=memory_size, buffer_transform=None, fixed_memory=fixed_memory)
