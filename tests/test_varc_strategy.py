"""The VAR generative classifier as a strategy: end to end, isolation, scoring identities, resume."""

import json

import pandas as pd
import pytest
import torch
import yaml

from cil.cli import main
from cil.config import TrainingConfig
from cil.data import load_dataset
from cil.errors import UserError
from cil.streams import build_stream
from cil.strategies import registry
from cil.strategies.registry import StrategyContext

TINY_VAR = {"model": {"width": 32, "depth": 1, "num_heads": 2, "vocab_size": 16}, "tokenizer_epochs": 1,
            "trunk_epochs": 1, "head_epochs": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def digits_stream():
    ds = load_dataset("digits")
    return ds, build_stream(ds, n_experiences=5)


def make_strategy(ds, name="varc", **params):
    ctx = StrategyContext(n_classes=ds.n_classes, image_shape=ds.image_shape, training=TrainingConfig(eval_mb_size=128),
                          seed=0, progress=False, name=name)
    return registry.build(name, ctx, {**TINY_VAR, **params})


def test_tiny_protocol_through_the_cli(tmp_path):
    proto = {"name": "tiny_varc", "dataset": "digits", "stream": {"n_experiences": 2},
             "strategies": {"varc": TINY_VAR, "avarc_plus": {**TINY_VAR, "cca_epochs": 1}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.strategy) == ["avarc_plus", "varc"]
    for name in ("varc", "avarc_plus"):
        acc = pd.read_csv(out / name / "seed0" / "accuracy_matrix.csv")
        R = acc.pivot(index="train_exp", columns="eval_exp", values="accuracy").to_numpy()
        assert R[0, 1] == 0.0  # classes not seen yet are never predicted
        assert R[0, 0] > 0.6  # two classes after one short epoch: far above chance
        inf = pd.read_csv(out / name / "seed0" / "inference.csv")
        assert "varc" in set(inf.setting) and (inf.images_per_second > 0).all()
        assert not (out / name / "seed0" / "checkpoints").exists()
    inf = pd.read_csv(out / "avarc_plus" / "seed0" / "inference.csv")
    plain = inf.set_index("setting").loc["varc"]
    pruned = inf[inf.setting.str.startswith("prune") & ~inf.setting.str.contains("smooth")].iloc[0]
    assert pruned.token_forwards_per_image < plain.token_forwards_per_image


@pytest.mark.parametrize("augment", [{}, {"augment_copies": 1, "augment_max_shift": 2}, {"ema_decay": 0.9},
                                     {"holdout": 0.2}, {"cca_epochs": 1, "cca_old_samples": 4}])
def test_frozen_trunk_keeps_old_classes_bit_identical(digits_stream, augment):
    ds, stream = digits_stream
    strategy = make_strategy(ds, **augment)
    train = stream.benchmark.train_stream
    strategy.train(train[0])
    strategy.train(train[1])
    var = strategy.classifier.var
    images = torch.as_tensor(ds.x_test[:40]).float().div(255)[:, None]
    before_params = {k: v.clone() for k, v in var.state_dict().items()
                     if not any(f"sets.{c}." in k for c in (4, 5))}
    before_ll = var.class_log_likelihoods(images, [0, 1, 2, 3])
    strategy.train(train[2])
    after = var.state_dict()
    for k, v in before_params.items():
        assert torch.equal(v, after[k]), k
    assert torch.equal(before_ll, var.class_log_likelihoods(images, [0, 1, 2, 3]))
    assert var.classes == [0, 1, 2, 3, 4, 5]


def test_shift_augmentation_changes_what_the_trunk_learns_and_is_deterministic(digits_stream):
    ds, stream = digits_stream
    first = stream.benchmark.train_stream[0]

    def trunk_after_first_experience(**params):
        strategy = make_strategy(ds, **params)
        strategy.train(first)
        return strategy.classifier.var.transformer_parameters()

    plain = trunk_after_first_experience()
    shifted = trunk_after_first_experience(augment_copies=1)
    again = trunk_after_first_experience(augment_copies=1)
    assert not all(torch.equal(a, b) for a, b in zip(plain, shifted))
    assert all(torch.equal(a, b) for a, b in zip(shifted, again))


def test_weight_averaging_and_holdout_change_the_heads_and_are_deterministic(digits_stream):
    ds, stream = digits_stream
    train = stream.benchmark.train_stream

    def heads_after_two_experiences(**params):
        strategy = make_strategy(ds, **params)
        strategy.train(train[0])
        strategy.train(train[1])
        return strategy.classifier.var.class_parameters([2, 3])

    plain = heads_after_two_experiences()
    for setting in ({"ema_decay": 0.9}, {"holdout": 0.2}):
        changed = heads_after_two_experiences(**setting)
        again = heads_after_two_experiences(**setting)
        assert not all(torch.equal(a, b) for a, b in zip(plain, changed)), setting
        assert all(torch.equal(a, b) for a, b in zip(changed, again)), setting


def test_cca_negatives_sampled_from_the_old_heads_change_the_new_heads_and_are_deterministic(digits_stream):
    ds, stream = digits_stream
    train = stream.benchmark.train_stream

    def heads_after_two_experiences(**params):
        strategy = make_strategy(ds, cca_epochs=1, **params)
        strategy.train(train[0])
        first = [p.clone() for p in strategy.classifier.var.class_parameters([0, 1])]
        strategy.train(train[1])
        return first, strategy.classifier.var.class_parameters([2, 3])

    first_plain, plain = heads_after_two_experiences()
    first_sampled, sampled = heads_after_two_experiences(cca_old_samples=4)
    again = heads_after_two_experiences(cca_old_samples=4)[1]
    # the first experience has no earlier class to sample: its CCA is the plain one
    assert all(torch.equal(a, b) for a, b in zip(first_plain, first_sampled))
    assert not all(torch.equal(a, b) for a, b in zip(plain, sampled))
    assert all(torch.equal(a, b) for a, b in zip(sampled, again))


def test_a_holdout_that_holds_out_no_image_of_a_class_is_a_user_error(digits_stream):
    ds, stream = digits_stream
    strategy = make_strategy(ds, holdout=0.001)  # 0.1% of about 115 images per class rounds to none
    with pytest.raises(UserError, match=r"strategies.varc.holdout: 0.001 of class \d+'s \d+ training images"):
        strategy.train(stream.benchmark.train_stream[0])


@pytest.mark.parametrize("trunk", ["frozen", "finetune"])
def test_remembered_likelihoods_equal_scoring_every_class_again(digits_stream, trunk):
    """After each experience the classifier's scores equal a fresh scoring of every class seen,
    bit for bit; with the trunk frozen only the new classes are scored, with it fine-tuned
    (every likelihood moves) all of them again."""
    from varc.classifier import log_prior, score

    ds, stream = digits_stream
    strategy = make_strategy(ds, trunk=trunk)
    clf = strategy.classifier
    images = torch.as_tensor(ds.x_test[:60]).float().div(255)[:, None]
    scored = []  # the classes each call had to score
    remembered = clf.memo.scores

    def recording(keys, classes, compute):
        def counted(rows, some):
            scored.append(list(some))
            return compute(rows, some)
        return remembered(keys, classes, counted)

    clf.memo.scores = recording
    for k in range(3):
        strategy.train(stream.benchmark.train_stream[k])
        scored.clear()
        got = clf.scores(images)
        classes = clf.var.classes
        fresh = score(clf.var, images, classes, clf.scoring, log_prior_C=log_prior(classes)).scores_BC
        assert torch.equal(got[:, classes], fresh)
        assert torch.isinf(got[:, [c for c in range(10) if c not in classes]]).all()
        new = classes[-2:]
        assert scored == [classes if (k == 0 or trunk == "finetune") else new]
        scored.clear()
        assert torch.equal(clf.scores(images[10:30]), got[10:30]) and scored == []  # all remembered


def test_the_report_against_the_first_classes_is_the_report_of_the_model_that_had_learnt_them(digits_stream):
    """With the trunk frozen, the final model's report against its first four classes equals the
    report the model made when it had learnt only those four: same accuracy, same token-forwards."""
    ds, stream = digits_stream
    strategy = make_strategy(ds, "avarc_plus", report_classes=[4], cca_epochs=1,
                             prune=[[2, 2], ["full", 1]], smooth_samples=2, smooth_std=0.05)
    clf, train = strategy.classifier, stream.benchmark.train_stream
    images = torch.as_tensor(ds.x_test).float().div(255)[:, None]
    labels = torch.as_tensor(ds.y_test).long()
    for k in range(2):
        strategy.train(train[k])
    first = torch.isin(labels, torch.tensor(clf.var.classes))
    early = clf.inference_report(images[first], labels[first])  # the four classes' images
    strategy.train(train[2])
    late = clf.inference_report(images, labels)
    assert {r["classes"] for r in early} == {4} and [r["classes"] for r in late].count(4) == len(early)
    assert {r["classes"] for r in late} == {4, 6}
    for a, b in zip(early, [r for r in late if r["classes"] == 4]):
        assert a["setting"] == b["setting"]
        assert a["accuracy"] == b["accuracy"] and a["token_forwards_per_image"] == b["token_forwards_per_image"]
    plain = {r["classes"]: r["token_forwards_per_image"] for r in late if r["setting"] == "varc"}
    assert plain[6] == pytest.approx(plain[4] * 6 / 4)  # plain scoring: one pass per class


def test_report_classes_are_checked(digits_stream, tmp_path, capsys):
    ds, _ = digits_stream
    with pytest.raises(UserError, match="report_classes: 10 is not below the dataset's 10 classes"):
        make_strategy(ds, report_classes=[10])
    proto = {"name": "bad", "dataset": "digits",
             "strategies": {"varc": {"report_classes": [4], "trunk": "finetune"}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "report_classes needs trunk: frozen" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_finetune_trunk_moves_old_classes(digits_stream):
    ds, stream = digits_stream
    strategy = make_strategy(ds, trunk="finetune")
    strategy.train(stream.benchmark.train_stream[0])
    w = strategy.classifier.var.trunk_parameters()[0].clone()
    strategy.train(stream.benchmark.train_stream[1])
    assert not torch.equal(w, strategy.classifier.var.trunk_parameters()[0])


@pytest.fixture(scope="module")
def scored_var(digits_stream):
    """A tiny VARC trained on two experiences (classes 0-3), 64 test images, its classes."""
    ds, stream = digits_stream
    strategy = make_strategy(ds)
    for exp in stream.benchmark.train_stream[:2]:
        strategy.train(exp)
    return strategy.classifier.var, torch.as_tensor(ds.x_test[:64]).float().div(255)[:, None], [0, 1, 2, 3]


def test_pruning_that_keeps_every_class_and_smoothing_with_one_sample_equal_varc(scored_var):
    from varc.classifier import ScoringConfig, score

    var, images, classes = scored_var
    plain = score(var, images, classes, ScoringConfig()).scores_BC
    keep_all = score(var, images, classes, ScoringConfig(prune=((2, 4), (None, 1)))).scores_BC
    one_sample = score(var, images, classes, ScoringConfig(smooth_samples=1, smooth_std=0.5)).scores_BC
    assert torch.equal(plain, keep_all)
    assert torch.equal(plain, one_sample)
    # and the identities are not vacuous: real pruning and real smoothing change the scores
    pruned = score(var, images, classes, ScoringConfig(prune=((1, 1), (None, 1))))
    assert torch.isinf(pruned.scores_BC).any() and pruned.token_forwards < score(var, images, classes).token_forwards
    smoothed = score(var, images, classes, ScoringConfig(smooth_samples=3, smooth_std=0.5),
                     generator=torch.Generator().manual_seed(0)).scores_BC
    assert not torch.equal(plain, smoothed)


def test_pruned_survivors_continue_from_the_cache_at_the_cost_of_their_remaining_scales(scored_var):
    from varc.classifier import ScoringConfig, score

    var, images, classes = scored_var
    B, C, L, l1, l2 = 64, 4, var.seq_len, var.prefix_len(1), var.prefix_len(2)
    plain = score(var, images, classes).scores_BC
    two = score(var, images, classes, ScoringConfig(prune=((1, 3), (2, 2), (None, 1))))
    # survivors carry their whole log-likelihood, built from cached prefixes
    alive = torch.isfinite(two.scores_BC)
    assert (alive.sum(1) == 2).all()
    torch.testing.assert_close(two.scores_BC[alive], plain[alive], rtol=1e-5, atol=1e-4)
    # each scale is paid for once per candidate still alive there
    assert two.stage_candidates == [B * C, B * 3, B * 2]
    assert two.token_forwards == B * (C * l1 + 3 * (l2 - l1) + 2 * (L - l2))
    # one candidate left after the first stage: decided there, nothing more is scored
    early = score(var, images, classes, ScoringConfig(prune=((2, 1), (None, 1))))
    assert early.token_forwards == B * C * l2 and early.stage_candidates == [B * C]
    assert torch.isfinite(early.scores_BC).sum(1).eq(1).all()


def test_margin_stages_keep_only_candidates_close_to_the_best(scored_var):
    from varc.classifier import ScoringConfig, parse_schedule, score

    var, images, classes = scored_var
    B, C, L, l2 = 64, 4, var.seq_len, var.prefix_len(2)
    plain = score(var, images, classes).scores_BC
    top3 = score(var, images, classes, ScoringConfig(prune=((2, 3), (None, 1))))
    # a margin nothing falls outside changes nothing; margin 0 leaves the best candidate alone
    wide = score(var, images, classes, ScoringConfig(prune=((2, 3, 1e9), (None, 1))))
    assert torch.equal(wide.scores_BC, top3.scores_BC) and wide.token_forwards == top3.token_forwards
    zero = score(var, images, classes, ScoringConfig(prune=((2, 3, 0.0), (None, 1))))
    assert zero.token_forwards == B * C * l2 and zero.stage_candidates == [B * C]
    with torch.no_grad():
        prefix_BC = var.class_log_likelihoods(images, classes, num_scales=2)
    assert torch.equal(zero.predict(classes), torch.tensor(classes)[prefix_BC.argmax(1)])
    # a middling margin: each image keeps its own number of candidates, scored on every scale
    gap_B = (prefix_BC.topk(2, 1).values[:, 0] - prefix_BC.topk(2, 1).values[:, 1])
    margin = float(gap_B.median())
    mid = score(var, images, classes, ScoringConfig(prune=((2, 3, margin), (None, 1))))
    alive = torch.isfinite(mid.scores_BC)
    n_B = alive.sum(1)
    assert n_B.min() == 1 and n_B.max() > 1
    undecided = n_B > 1
    torch.testing.assert_close(mid.scores_BC[alive & undecided[:, None]], plain[alive & undecided[:, None]],
                               rtol=1e-5, atol=1e-4)
    assert mid.token_forwards == B * C * l2 + int(n_B[undecided].sum()) * (L - l2)
    assert parse_schedule([[2, 3, 5], ["full", 1]], var.num_scales) == ((2, 3, 5.0), (None, 1, None))
    for bad, msg in [([[2, 3, -1]], "margin"), ([[2, 3, "x"]], "margin"), ([["full", 1, 2.0]], "full-scale"),
                     ([[2, 3, 1, 1]], "expected")]:
        with pytest.raises(ValueError, match=msg):
            parse_schedule(bad, var.num_scales)


@pytest.mark.parametrize("stages, samples", [(((1, 3, 2.0), (2, 2), (None, 1)), 1), (((2, 2), (None, 1)), 2)])
def test_remembered_prefixes_predict_what_fresh_pruning_and_smoothing_predict(scored_var, stages, samples):
    """A-VARC+ with a memo of per-scale log-likelihoods: the same predictions and (to rounding)
    the same scores as scoring afresh, as classes arrive; scoring again costs nothing and gives
    the same bits; a pair reaches deeper scales only where a stage needs them."""
    from varc.classifier import ScoringConfig, score
    from varc.memo import ScoreMemo

    var, images, classes = scored_var
    config = ScoringConfig(prune=stages, smooth_samples=samples, smooth_std=0.3 if samples > 1 else 0.0)
    memo = ScoreMemo(10, width=var.num_scales)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - the classifier's per-call generator
    for seen in (classes[:2], classes[:3], classes):
        fresh = score(var, images, seen, config, generator=gen())
        kept = score(var, images, seen, config, generator=gen(), memo=memo)
        assert torch.equal(kept.predict(seen), fresh.predict(seen))
        assert torch.equal(torch.isinf(kept.scores_BC), torch.isinf(fresh.scores_BC))
        alive = torch.isfinite(fresh.scores_BC)
        torch.testing.assert_close(kept.scores_BC[alive], fresh.scores_BC[alive], rtol=1e-5, atol=1e-4)
        if seen != classes[:2]:
            assert 0 < kept.token_forwards < fresh.token_forwards  # the old classes' scales are read back
        again = score(var, images, seen, config, generator=gen(), memo=memo)
        assert again.token_forwards == 0 and torch.equal(again.scores_BC, kept.scores_BC)
    assert len(memo.rows) == 64 * samples  # one row per tokenisation
    rows = torch.stack(list(memo.rows.values()))[:, classes]
    assert rows[..., 0].isfinite().all() and rows[..., -1].isnan().any()  # pruned pairs stop early
    with pytest.raises(ValueError, match="does not fit"):
        score(var, images, classes, config, memo=ScoreMemo(10, width=1))


def _benchmark(name: str):
    """A script of benchmarks/ as a module (its sibling scripts importable, as when it runs)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(bench))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    return module


def test_the_pruning_sweep_times_the_reports_images_and_searches_on_others(digits_stream, monkeypatch):
    """With --protocol, the sweep's timed images are the ones the run's inference report timed,
    and its search images are none of them (a schedule is not chosen on the images that judge it)."""
    from cil.strategies.generative import report_order

    sweep = _benchmark("pruning_sweep")
    ds, stream = digits_stream
    strategy = make_strategy(ds, report_limit=100)
    seen = []
    monkeypatch.setattr(type(strategy.classifier), "_measure", lambda self, cfg, images, labels, classes: seen.append(images) or
                        {"setting": cfg.name, "accuracy": 0.0, "images_per_second": 1.0})
    strategy.inference_report(stream.benchmark.test_stream)
    images, labels, source = sweep.test_set("split_digits", "digits")
    assert "split_digits" in source and len(labels) == len(ds.y_test)
    order = report_order(len(labels))
    assert torch.equal(images[order[:100]], seen[0])
    assert not set(order[:100].tolist()) & set(order[100:].tolist())
    dataset_order, _, _ = sweep.test_set(None, "digits")
    assert not torch.equal(dataset_order[order[:100]], seen[0])  # stream order is not the dataset's


def test_the_pruning_sweep_replays_the_scorers_decisions(scored_var):
    """benchmarks/pruning_sweep.py chooses schedules by replaying them from prefix scores; the
    replay must agree with the real scorer on accuracy and cost."""
    from varc.classifier import ScoringConfig, parse_schedule, score

    sweep = _benchmark("pruning_sweep")
    var, images, classes = scored_var
    labels = torch.tensor([classes[i % 4] for i in range(64)])  # any labels will do for agreement
    with torch.no_grad():
        lp_BCL = var.class_token_log_probs(images, classes)
    cum_BCK = sweep.prefix_log_likelihoods(lp_BCL, var.scale_ends)
    target_B = torch.searchsorted(torch.tensor(classes), labels)
    for text in ["2:3", "1:3,3:2", "2:3@2", "1:3@4,3:2@1", "2:1"]:
        stages = parse_schedule(sweep.parse_stages(text), var.num_scales)
        res = score(var, images, classes, ScoringConfig(prune=stages))
        acc, cost = sweep.replay(cum_BCK, target_B, var.scale_ends, [s for s in stages if s[0] is not None])
        assert cost == res.token_forwards / 64, text
        assert acc == (res.predict(classes) == labels).float().mean().item(), text


def test_the_scale_evidence_script_agrees_with_the_scorer(scored_var, digits_stream):
    """benchmarks/scale_evidence.py splits log p(x | y) by scale and normalises it by each class's
    own images: its scale sums must be the scorer's scores, its statistics the class's own head's."""
    from varc.classifier import score
    from varc.train import as_image_tensor

    ev = _benchmark("scale_evidence")
    var, images, classes = scored_var
    ds, _ = digits_stream
    target_B = torch.tensor([i % 4 for i in range(64)])  # any targets will do for agreement
    ll_BCK = ev.per_scale_log_likelihoods(var, images, classes, batch=16)
    assert ll_BCK.shape == (64, 4, var.num_scales)
    plain_BC = score(var, images, classes).scores_BC
    torch.testing.assert_close(ll_BCK.sum(-1), plain_BC, rtol=1e-5, atol=1e-3)
    accs = ev.scale_accuracies(ll_BCK, target_B)
    assert accs[-1][0] == (plain_BC.argmax(1) == target_B).float().mean().item()
    assert accs[0][0] == accs[0][1]  # the first scale is both "first 1" and "scale 1 alone"
    mean_C, std_C = ev.own_class_statistics(var, classes, ds.x_train, ds.y_train, per_class=10**6, batch=64)
    for c, m, sd in zip(classes, mean_C, std_C):
        own = as_image_tensor(ds.x_train[ds.y_train == c])
        with torch.no_grad():
            ll_B = var.log_likelihood(own, torch.full((len(own),), c))
        torch.testing.assert_close(m, ll_B.mean(), rtol=1e-4, atol=1e-2)
        torch.testing.assert_close(sd, ll_B.std(), rtol=1e-3, atol=1e-2)


def test_a_restored_checkpoint_keeps_the_likelihood_memo(digits_stream, monkeypatch):
    """A run resumed from a checkpoint scores again nothing the interrupted run had scored: the
    memo of old classes' log-likelihoods travels in the checkpoint, through the runner's
    ``torch.save`` / ``torch.load(weights_only=True)``."""
    import io

    import varc.classifier as vc

    ds, stream = digits_stream
    strategy = make_strategy(ds)
    for exp in stream.benchmark.train_stream[:2]:
        strategy.train(exp)
    x_BCHW = torch.as_tensor(ds.x_test[:32]).float().div(255)[:, None]
    before = strategy.classifier.scores(x_BCHW)
    buffer = io.BytesIO()
    torch.save(strategy.classifier.state_dict(), buffer)
    buffer.seek(0)
    restored = make_strategy(ds).classifier
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert len(restored.memo.rows) == 32
    calls, score = [], vc.score
    monkeypatch.setattr(vc, "score", lambda *a, **k: calls.append(a[2]) or score(*a, **k))
    assert torch.equal(restored.scores(x_BCHW), before)
    assert calls == []  # nothing scored again
    restored.memo.clear()
    assert torch.equal(restored.scores(x_BCHW), before) and calls  # and the check can fail


def test_a_pruning_classifier_remembers_scales_and_predicts_as_fresh_scoring(digits_stream):
    """A-VARC+'s classifier scores through its memo of per-scale log-likelihoods: after each
    experience it predicts what a fresh pruned, smoothed scoring predicts; the memo travels in
    the checkpoint and gives the restored classifier the same scores."""
    import io

    from varc.classifier import log_prior, score

    ds, stream = digits_stream
    strategy = make_strategy(ds, "avarc_plus", prune=[[1, 2], ["full", 1]], smooth_samples=2, smooth_std=0.2)
    clf = strategy.classifier
    assert clf.memo.width == clf.var.num_scales
    images = torch.as_tensor(ds.x_test[:48]).float().div(255)[:, None]
    for exp in stream.benchmark.train_stream[:2]:
        strategy.train(exp)
        got = clf.scores(images)
        classes = clf.var.classes
        fresh = score(clf.var, images, classes, clf.scoring, log_prior_C=log_prior(classes),
                      generator=torch.Generator().manual_seed(0))
        assert torch.equal(got[:, classes].argmax(1), fresh.scores_BC.argmax(1))
        assert torch.equal(torch.isinf(got[:, classes]), torch.isinf(fresh.scores_BC))
    n_rows = len(clf.memo.rows)
    buffer = io.BytesIO()
    torch.save(clf.state_dict(), buffer)
    buffer.seek(0)
    restored = make_strategy(ds, "avarc_plus", prune=[[1, 2], ["full", 1]], smooth_samples=2,
                             smooth_std=0.2).classifier
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert len(restored.memo.rows) == n_rows == 2 * 48
    assert torch.equal(restored.scores(images), got)


def _interrupted_run(tmp_path, monkeypatch, out: str):
    """Write a three-experience VARC protocol and run it into ``out``, interrupted (Ctrl-C)
    while training the third experience; returns the protocol's path."""
    from cil.strategies.generative import VARClassifier

    proto = {"name": "resume", "dataset": "digits", "stream": {"n_experiences": 3, "classes_per_exp": None,
                                                               "first_exp_classes": 4},
             "strategies": {"varc": TINY_VAR}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    original = VARClassifier.update

    def crash_on_third(self, images, labels):
        if self.exp_index == 2:
            raise KeyboardInterrupt
        return original(self, images, labels)

    with monkeypatch.context() as m:
        m.setattr(VARClassifier, "update", crash_on_third)
        assert main(["run", str(path), "--out", str(tmp_path / out), "--quiet"]) == 130
    return path


def test_resume_after_interruption_gives_the_same_results(tmp_path, monkeypatch):
    path = _interrupted_run(tmp_path, monkeypatch, "b")
    assert sorted(p.name for p in (tmp_path / "b" / "varc" / "seed0" / "checkpoints").iterdir()) == \
        ["exp000.pt", "exp001.pt"]
    assert not (tmp_path / "b" / "varc" / "seed0" / "metrics.json").exists()
    assert main(["run", str(path), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 0  # uninterrupted
    a = json.loads((tmp_path / "a" / "varc" / "seed0" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "varc" / "seed0" / "metrics.json").read_text())
    for key in ("final_accuracy", "average_forgetting", "bwt", "per_experience_final", "seen_accuracy"):
        assert a[key] == b[key], key


def test_checkpoints_made_before_a_parameter_existed_are_resumed_at_its_default(tmp_path, monkeypatch, capsys):
    """A checkpoint whose settings lack a parameter the code has since gained (here
    ``augment_copies``) resumes when the protocol leaves that parameter at its default, as a
    finished cell does; the results equal an uninterrupted run's."""
    path = _interrupted_run(tmp_path, monkeypatch, "b")
    ckpt = tmp_path / "b" / "varc" / "seed0" / "checkpoints" / "exp001.pt"
    state = torch.load(ckpt, weights_only=True)
    settings = json.loads(state["settings"])
    del settings["strategies"]["varc"]["augment_copies"]
    state["settings"] = json.dumps(settings, sort_keys=True)
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "b")]) == 0
    shown = capsys.readouterr()
    assert "resuming" in shown.out and "other settings" not in shown.err
    assert main(["run", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 0  # uninterrupted
    a = json.loads((tmp_path / "a" / "varc" / "seed0" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "varc" / "seed0" / "metrics.json").read_text())
    assert a["per_experience_final"] == b["per_experience_final"]


def test_checkpoints_made_with_other_settings_are_not_resumed(tmp_path, monkeypatch, capsys):
    path = _interrupted_run(tmp_path, monkeypatch, "b")
    changed = ["--set", "strategies.varc.prune=[[2, 2]]"]  # scoring changed: old evaluations are void
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "b"), *changed]) == 0
    shown = capsys.readouterr()
    assert "other settings; starting the cell over" in shown.err and "resuming" not in shown.out
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--quiet", *changed]) == 0
    b = (tmp_path / "b" / "varc" / "seed0" / "accuracy_matrix.csv").read_text()
    assert b == (tmp_path / "c" / "varc" / "seed0" / "accuracy_matrix.csv").read_text()


def test_bad_settings_are_user_errors(tmp_path, capsys):
    proto = {"name": "bad", "dataset": "digits", "strategies": {"varc": {"prune": [[9, 2]]}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(proto))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: strategies.varc") and "num_scales" in err
    proto["strategies"]["varc"] = {"augment_max_shift": 2}  # a shift with no shifted copies to apply it to
    path.write_text(yaml.safe_dump(proto))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: strategies.varc.augment_max_shift") and "augment_copies" in err
    proto["strategies"]["varc"] = {"ema_decay": 1.0}  # an average that never moves from the initial weights
    path.write_text(yaml.safe_dump(proto))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: strategies.varc.ema_decay") and "below 1" in err
    for bad, words in (({"holdout": 0.5}, ["strategies.varc.holdout", "less than half"]),
                       ({"holdout": 0.1, "ema_decay": 0.9}, ["strategies.varc:", "set one of them"]),
                       ({"cca_old_samples": 8}, ["strategies.varc.cca_old_samples", "cca_epochs is 0"])):
        proto["strategies"]["varc"] = bad
        path.write_text(yaml.safe_dump(proto))
        assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and all(w in err for w in words), err
    assert not (tmp_path / "o").exists()


def test_the_tokenizer_coverage_script_reports_every_class_for_every_setting(monkeypatch, capsys):
    """benchmarks/tokenizer_coverage.py: one row per tokenizer it trains (each epoch count on the
    first classes, then the every-class reference), each with one MSE per class; bad input is
    refused with a line that says what is expected."""
    import sys

    cov = _benchmark("tokenizer_coverage")
    monkeypatch.setattr(sys, "argv", ["tokenizer_coverage.py", "--dataset", "digits", "--first", "0,1",
                                      "--epochs", "1,2", "--all-classes", "1", "--per-class", "8"])
    cov.main()
    out = capsys.readouterr().out
    assert "batch 64, lr 0.002;" in out.splitlines()[0]  # the VARC strategy's own defaults
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[:3] for r in rows] == [["first", "classes", "1"], ["first", "classes", "2"], ["every", "class", "1"]]
    for r in rows:
        mse = [float(v) for v in r[4:]]
        assert len(mse) == 11 and all(m >= 0 for m in mse)  # ten classes, then the later classes' mean
        assert mse[-1] == pytest.approx(sum(mse[2:10]) / 8, abs=2e-4)
    monkeypatch.setattr(sys, "argv", ["tokenizer_coverage.py", "--dataset", "digits", "--first", "0,1,2,3,4,5,6,7,8,9"])
    with pytest.raises(SystemExit, match="some \\(not all\\)"):
        cov.main()
    monkeypatch.setattr(sys, "argv", ["tokenizer_coverage.py", "--dataset", "digits", "--lr", "0"])
    with pytest.raises(SystemExit, match="--lr > 0"):
        cov.main()


def test_the_cca_effect_script_sorts_each_shift_and_error_by_when_the_classes_were_learnt():
    """benchmarks/cca_effect.py: head c's shift on an image counts as own / partner / before / after
    by the experiences that brought the image's class and c; errors within one experience or across."""
    import numpy as np

    fx = _benchmark("cca_effect")
    config = {"run": {"classes_per_experience": [[3, 1], [0, 2]]}}
    exp_of = fx.experiences(config)
    assert exp_of == {3: 0, 1: 0, 0: 1, 2: 1}
    classes = [0, 1, 2, 3]
    y_N = np.array([3, 0])
    d_NC = np.array([[10.0, 20.0, 30.0, 40.0],  # an image of class 3 (first experience)
                     [1.0, 2.0, 3.0, 4.0]])  # an image of class 0 (second experience)
    shift = fx.shift_by_relation(d_NC, y_N, classes, exp_of)
    # own: head 3 on its image 40, head 0 on its 1; partner: head 1 on class 3 (20), head 2 on
    # class 0 (3); heads 0 and 2 came after class 3 (before: 10, 30); heads 1, 3 before class 0 (after: 2, 4)
    assert shift == {"own": 20.5, "partner": 11.5, "before": 20.0, "after": 3.0}
    assert fx.error_split(np.array([1, 3, 0]), np.array([3, 0, 0]), exp_of) == (2, 1, 1)  # 3->1 within, 0->3 across
