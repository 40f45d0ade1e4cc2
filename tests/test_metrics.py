"""Metrics on hand-computed matrices and against Avalanche's own forgetting/BWT on a real run."""

import numpy as np
import pytest

from cil import metrics

R3 = [[0.9, 0.0, 0.0],
      [0.5, 0.8, 0.0],
      [0.3, 0.6, 0.7]]


def test_hand_computed_matrix():
    assert metrics.final_accuracy(R3) == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert metrics.seen_accuracy(R3) == pytest.approx([0.9, 0.65, (0.3 + 0.6 + 0.7) / 3])
    assert metrics.average_incremental_accuracy(R3) == pytest.approx((0.9 + 0.65 + 1.6 / 3) / 3)
    assert metrics.forgetting_per_experience(R3) == pytest.approx([0.6, 0.2])
    assert metrics.average_forgetting(R3) == pytest.approx(0.4)
    assert metrics.bwt(R3) == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)


def test_forgetting_is_max_based_not_diagonal():
    # experience 0 improves after experience 1 (backward transfer), then drops
    R = [[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.8, 0.9]]
    assert metrics.forgetting_per_experience(R) == pytest.approx([0.5, 0.0])
    assert metrics.bwt(R) == pytest.approx(((0.4 - 0.5) + 0.0) / 2)


def test_single_experience_and_bad_shapes():
    assert metrics.average_forgetting([[0.7]]) == 0.0
    assert metrics.bwt([[0.7]]) == 0.0
    with pytest.raises(ValueError):
        metrics.final_accuracy([[0.1, 0.2]])
    with pytest.raises(ValueError):
        metrics.final_accuracy([])


def test_against_avalanche_on_a_real_run():
    """Run replay on Split digits with Avalanche's forgetting and BWT metrics attached."""
    from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from cil.data import load_dataset
    from cil.runner import experience_accuracies, seed_everything
    from cil.streams import build_stream
    from cil.strategies import registry
    from cil.config import TrainingConfig
    from cil.strategies.registry import StrategyContext

    seed_everything(0)
    ds = load_dataset("digits")
    stream = build_stream(ds, n_experiences=5)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 forgetting_metrics(experience=True, stream=True),
                                 bwt_metrics(experience=True, stream=True), loggers=[])
    ctx = StrategyContext(n_classes=10, image_shape=ds.image_shape, evaluator=evaluator,
                          training=TrainingConfig(epochs=2, train_mb_size=32, backbone_args={"hidden": [64]}))
    strategy = registry.build("replay", ctx, {"mem_size": 50})
    R = []
    for exp in stream.benchmark.train_stream:
        strategy.train(exp)
        res = strategy.eval(stream.benchmark.test_stream)
        R.append(experience_accuracies(res, 5))
    R = np.array(R)
    assert metrics.bwt(R) == pytest.approx(res["StreamBWT/eval_phase/test_stream"], abs=1e-9)
    # Avalanche's forgetting is measured from the accuracy right after learning (the diagonal) ...
    for j in range(4):
        key = next(k for k in res if k.startswith("ExperienceForgetting/") and k.endswith(f"Exp{j:03d}"))
        assert R[j, j] - R[-1, j] == pytest.approx(res[key], abs=1e-9)
    # ... ours from the best accuracy before the last step: never smaller, equal when the diagonal is the best.
    assert metrics.average_forgetting(R) >= res["StreamForgetting/eval_phase/test_stream"] - 1e-12
    if all(R[j, j] >= R[j:4, j].max() for j in range(4)):
        assert metrics.average_forgetting(R) == pytest.approx(res["StreamForgetting/eval_phase/test_stream"])
