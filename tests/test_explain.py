"""Explanations from the VAR classifier: the Bayes marginal, pixel maps, TMI of an uninformative
class, the VAR gradient's straight-through path, insertion/deletion AUCs, and ``cil explain``."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from cil.cli import main
from cil.explain import faithfulness as fa
from varc import explain as ve
from varc.heads import NULL_CLASS
from varc.model import VARModel
from varc.train import as_image_tensor
from varc_helpers import digits_config, scramble


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    d = load_digits()
    return as_image_tensor((d.images[:12] * 16).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def model() -> VARModel:
    return scramble(VARModel(digits_config(), classes=[0, 1, 2, 5]))


# ------------------------------------------------------------------------------------------------
# Bayes marginal
# ------------------------------------------------------------------------------------------------
def direct_marginal(lp_BCL: torch.Tensor, scale_ends: list[int], prior_C: torch.Tensor) -> torch.Tensor:
    """p(r_t | r_<k) = sum_y p(y | r_<k) p(r_t | r_<k, y), one image, token and class at a time."""
    B, C, L = lp_BCL.shape
    p = lp_BCL.double().exp()
    prior = prior_C.double().exp()
    out = torch.empty(B, L, dtype=torch.float64)
    for b in range(B):
        for t in range(L):
            start = max([0] + [e for e in scale_ends if e <= t])  # first token of t's scale
            joint = [prior[y] * math.prod(p[b, y, u].item() for u in range(start)) for y in range(C)]
            z = sum(joint)
            out[b, t] = math.log(sum(joint[y] / z * p[b, y, t].item() for y in range(C)))
    return out


@pytest.mark.parametrize("prior", ["uniform", "skewed"])
def test_bayes_marginal_equals_direct_sum_over_classes(model, images, prior) -> None:
    classes = model.classes
    prior_C = None if prior == "uniform" else torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    ex = ve.explain_tokens(model, images[:4], classes, log_prior_C=prior_C)
    used = ex.log_prior_C
    assert torch.allclose(used.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    direct = direct_marginal(ex.token_log_probs_BCL, model.scale_ends, used)
    assert torch.allclose(ex.log_marginal_BL, direct, atol=1e-9, rtol=1e-9)
    # the prefix posterior really moves away from the prior at later scales (else the test is weak)
    post = ve.prefix_log_posterior(ex.token_log_probs_BCL, model.scale_ends, used).exp()
    assert torch.allclose(post[..., 0], used.exp().expand(4, -1))
    assert (post[..., -1] - used.exp()).abs().max() > 0.05


def test_bayes_marginal_is_a_distribution_over_codes(model, images) -> None:
    """Summed over every code v a token could take, the Bayes marginal is 1 (the class weights
    depend only on earlier scales, so changing one token leaves its own scale's weights alone)."""
    tokens = model.encode(images[:2])
    flat = VARModel.flatten_tokens(tokens)
    t = model.scale_ends[1] + 1  # a token of the third scale
    totals = torch.zeros(2, dtype=torch.float64)
    for v in range(model.config.vocab_size):
        alt = flat.clone()
        alt[:, t] = v
        ex = ve.explain_tokens(model, alt, model.classes)
        totals += ex.log_marginal_BL[:, t].exp()
    assert torch.allclose(totals, torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_bayes_marginal_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="cover"):
        ve.bayes_marginal(torch.zeros(1, 2, 5), [1, 6])
    with pytest.raises(ValueError, match="one entry per class"):
        ve.bayes_marginal(torch.zeros(1, 2, 5), [1, 5], torch.zeros(3))


# ------------------------------------------------------------------------------------------------
# TMI of classes that explain nothing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("marginal", ["bayes", "null"])
def test_tmi_is_zero_when_every_class_has_identical_parameters(images, marginal) -> None:
    m = scramble(VARModel(digits_config(), classes=[]))
    m.add_classes([0, 1, 2], init="null")  # every class an exact copy of the null class
    ex = ve.explain_tokens(m, images[:6], m.classes, marginal=marginal)
    assert ex.tmi_BCL.abs().max() < 1e-9
    assert ex.contrast().abs().max() < 1e-9
    # control: one class made different gets non-zero TMI under the same computation
    with torch.no_grad():
        m.heads.head(2).embedding.add_(1.0)
    ex = ve.explain_tokens(m, images[:6], m.classes, marginal=marginal)
    assert ex.tmi_BCL[:, 2].abs().max() > 1e-3
    assert torch.allclose(ex.contrast(torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)),
                          torch.zeros(6, m.seq_len, dtype=torch.float64), atol=1e-9)


def test_contrast_sums_to_log_likelihood_difference_and_matches_null_pass(model, images) -> None:
    ex = ve.explain_tokens(model, images[:5], model.classes, marginal="null")
    a, b = ex.predicted, ex.runner_up
    assert (a != b).all()
    ll = model.class_log_likelihoods(images[:5], model.classes).double()
    rows = torch.arange(5)
    assert torch.allclose(ex.contrast().sum(1), ll[rows, a] - ll[rows, b], atol=1e-4)
    null_lp = model.class_token_log_probs(images[:5], [NULL_CLASS])[:, 0].double()
    assert torch.allclose(ex.log_marginal_BL, null_lp)
    assert torch.equal(ex.predicted, ll.argmax(1))


def test_explain_tokens_rejects_bad_arguments(model, images) -> None:
    with pytest.raises(ValueError, match="marginal"):
        ve.explain_tokens(model, images[:2], marginal="uniform")
    with pytest.raises(ValueError, match="null class"):
        ve.explain_tokens(model, images[:2], [0, NULL_CLASS])


# ------------------------------------------------------------------------------------------------
# Pixel maps
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("patch_nums,size", [((1, 2, 3, 5, 7), 28), ((1, 2, 3, 4), 8), ((1, 3), 7)])
def test_pixel_maps_sum_to_the_token_totals(patch_nums, size) -> None:
    L = sum(p * p for p in patch_nums)
    values = torch.randn(3, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per_scale = ve.pixel_map(values, patch_nums, (size, size), per_scale=True)
    assert per_scale.shape == (3, len(patch_nums), size, size)
    start = 0
    for k, pn in enumerate(patch_nums):
        assert torch.allclose(per_scale[:, k].sum((-2, -1)), values[:, start : start + pn * pn].sum(1))
        start += pn * pn
    full = ve.pixel_map(values, patch_nums, (size, size))
    assert torch.allclose(full.sum((-2, -1)), values.sum(1))
    assert torch.allclose(full, per_scale.sum(1))


def test_pixel_map_spreads_a_token_evenly_over_its_cell() -> None:
    patch_nums, size = (1, 2), 8
    values = torch.zeros(1, 5, dtype=torch.float64)
    values[0, 1 + 3] = 8.0  # scale 2, bottom-right cell: 16 pixels of the 64
    m = ve.pixel_map(values, patch_nums, (size, size))
    assert torch.allclose(m[0, 4:, 4:], torch.full((4, 4), 0.5, dtype=torch.float64))
    assert m[0, :4].abs().max() == 0 and m[0, :, :4].abs().max() == 0


def test_tmi_pixel_map_of_a_model_sums_to_the_image_total(model, images) -> None:
    ex = ve.explain_tokens(model, images[:4], model.classes)
    tmi = ex.tmi()
    m = ve.pixel_map(tmi, model.patch_nums, (8, 8))
    assert torch.allclose(m.sum((-2, -1)), tmi.sum(1))


# ------------------------------------------------------------------------------------------------
# Saliency baselines
# ------------------------------------------------------------------------------------------------
def test_var_gradient_saliency_differentiates_the_classifier_itself(model, images) -> None:
    x = images[:3]
    # the straight-through forward pass has exactly the classifier's values
    xg = x.clone().requires_grad_(True)
    ll = ve.straight_through_log_likelihoods(model, xg, model.classes)
    assert torch.allclose(ll, model.class_log_likelihoods(x, model.classes), atol=1e-4)
    (grad,) = torch.autograd.grad(ll[:, 0].sum(), xg)
    assert grad.abs().sum() > 0
    target = torch.tensor([0, 1, 3])
    sal = fa.var_gradient_saliency(model, x, target, model.classes)
    assert sal.shape == (3, 8, 8)
    assert torch.isfinite(sal).all() and (sal > 0).any()
    # the gradient of a target that is the whole posterior mass is 0: one class only
    one = fa.var_gradient_saliency(model, x, torch.zeros(3, dtype=torch.long), [0])
    assert one.abs().max() < 1e-9
    assert all(p.grad is None for p in model.parameters())  # the model is left untouched


def test_input_gradient_of_a_linear_classifier() -> None:
    w = torch.zeros(2, 1, 2, 2)
    w[0, 0, 0, 0], w[1, 0, 1, 1] = 3.0, 1.0
    x = torch.full((1, 1, 2, 2), 0.5)

    def logits(im: torch.Tensor) -> torch.Tensor:
        return (im[:, None] * w[None]).flatten(2).sum(-1)

    sal = fa.input_gradient(logits, x, torch.tensor([0]))
    expected = torch.zeros(2, 2, dtype=torch.float64)
    expected[0, 0], expected[1, 1] = 3.0, 1.0  # d (logit_0 - logit_1) = w0 - w1
    assert torch.allclose(sal[0], expected, atol=1e-6)


def test_log_odds_gradient_is_the_posterior_gradient_rescaled() -> None:
    """Same direction as d log p(target), without the float cancellation when p(target) is near 1."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 2, 3])
    (g_odds,) = torch.autograd.grad(fa.log_odds(x @ w.T, t).sum(), x)
    logp = torch.log_softmax(x @ w.T, 1)
    (g_post,) = torch.autograd.grad(logp[torch.arange(3), t].sum(), x)
    one_minus_p = 1 - logp[torch.arange(3), t].exp().detach()
    assert torch.allclose(g_post, g_odds * one_minus_p[:, None])
    # a sure classifier (gaps of hundreds of nats): the log-odds' gradient is still the exact
    # w_target - sum_{y != target} softmax_y w_y, the posterior's has collapsed to nothing useful
    s = 200 * (x @ w.T)
    t = s.argmax(1).detach()
    (g_sure,) = torch.autograd.grad(fa.log_odds(s, t).sum(), x)
    expected = torch.stack([200 * (w[t[b]] - sum(torch.softmax(s[b].detach().masked_fill(
        torch.arange(4) == t[b], float("-inf")), 0)[y] * w[y] for y in range(4))) for b in range(3)])
    assert torch.allclose(g_sure, expected)
    s = 200 * (x @ w.T)
    (g_post,) = torch.autograd.grad(torch.log_softmax(s, 1)[torch.arange(3), t].sum(), x)
    assert g_post.norm() < 1e-12 * g_sure.norm()


def test_occlusion_marks_exactly_the_pixels_the_score_reads() -> None:
    x = torch.ones(2, 1, 4, 4)

    def log_prob(im: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return im[:, 0, :2, :2].sum((-2, -1)) * (1 + target.double())

    sal = fa.occlusion(log_prob, x, torch.tensor([0, 1]), patch=2, stride=2)
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    expected[0, :2, :2], expected[1, :2, :2] = 4.0, 8.0
    assert torch.allclose(sal, expected)


# ------------------------------------------------------------------------------------------------
# Insertion / deletion
# ------------------------------------------------------------------------------------------------
WEIGHTS = torch.tensor([[0.4, 0.3], [0.2, 0.1]], dtype=torch.float64)


def linear_score(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """p(target) = weighted sum of pixel values (weights sum to 1): a hand-built classifier."""
    return (images[:, 0].double() * WEIGHTS).sum((-2, -1))


def test_insertion_and_deletion_auc_on_a_hand_built_example() -> None:
    img = torch.ones(1, 1, 2, 2)
    canvas = torch.zeros_like(img)
    target = torch.tensor([0])
    best, worst = WEIGHTS[None], -WEIGHTS[None]
    ins = fa.perturbation_curve(linear_score, img, best, target, kind="insertion", canvas=canvas, steps=4)
    assert torch.allclose(ins[0], torch.tensor([0.0, 0.4, 0.7, 0.9, 1.0], dtype=torch.float64))
    dele = fa.perturbation_curve(linear_score, img, best, target, kind="deletion", canvas=canvas, steps=4)
    assert torch.allclose(dele[0], torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0], dtype=torch.float64))
    # trapezoids of width 1/4: (0 + .4)/2 + (.4 + .7)/2 + (.7 + .9)/2 + (.9 + 1)/2 = 2.5, / 4
    assert fa.auc(ins).item() == pytest.approx(2.5 / 4)
    assert fa.auc(dele).item() == pytest.approx(1.5 / 4)
    # the reversed order is worse on both curves
    ins_w = fa.perturbation_curve(linear_score, img, worst, target, kind="insertion", canvas=canvas, steps=4)
    del_w = fa.perturbation_curve(linear_score, img, worst, target, kind="deletion", canvas=canvas, steps=4)
    assert fa.auc(ins_w).item() == pytest.approx(1.5 / 4)
    assert fa.auc(del_w).item() == pytest.approx(2.5 / 4)


def test_curves_batch_images_and_steps_independently_of_chunking() -> None:
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(5, 1, 6, 6, generator=g)
    sal = torch.rand(5, 6, 6, generator=g, dtype=torch.float64)
    w = torch.rand(6, 6, generator=g, dtype=torch.float64)

    def score(im: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (im[:, 0].double() * w).sum((-2, -1)) + target.double()

    target = torch.arange(5)
    a = fa.perturbation_curve(score, imgs, sal, target, kind="deletion", canvas=torch.zeros_like(imgs), steps=7)
    b = fa.perturbation_curve(score, imgs, sal, target, kind="deletion", canvas=torch.zeros_like(imgs), steps=7,
                              batch_size=3)
    assert torch.equal(a, b)
    assert torch.allclose(a[:, 0], score(imgs, target)) and torch.allclose(a[:, -1], target.double())


def test_step_counts_and_auc_validation() -> None:
    assert fa.step_counts(10, 4) == [0, 2, 5, 8, 10]
    assert fa.auc(torch.full((2, 9), 0.3, dtype=torch.float64)).tolist() == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError):
        fa.auc(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="kind"):
        fa.perturbation_curve(linear_score, torch.ones(1, 1, 2, 2), WEIGHTS[None], torch.tensor([0]),
                              kind="swap", canvas=torch.zeros(1, 1, 2, 2))


def test_random_pixel_ranks_break_ties_with_the_generator() -> None:
    flat = torch.zeros(2, 3, 3, dtype=torch.float64)
    r1 = fa.pixel_ranks(flat, generator=torch.Generator().manual_seed(0))
    r2 = fa.pixel_ranks(flat, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2)
    assert sorted(r1[0].tolist()) == list(range(9))
    assert torch.equal(fa.pixel_ranks(flat)[0], torch.arange(9))


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------
def test_cli_explain_writes_grid_and_faithfulness_table(tmp_path) -> None:
    model = scramble(VARModel(digits_config(), classes=range(10)))
    ckpt = tmp_path / "run" / "varc" / "seed0" / "model.pt"
    model.save(ckpt)  # no dataset recorded: the command must be told
    out = tmp_path / "out"
    argv = [str(tmp_path / "run"), "--out", str(out), "--n", "3", "--faithfulness", "4", "--steps", "3",
            "--cnn-train-limit", "64", "--batch-size", "3"]
    assert main(["explain", *argv]) == 2  # dataset unknown
    assert main(["explain", *argv, "--dataset", "digits"]) == 0
    assert (out / "explanations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "faithfulness.csv").open()))
    assert {(r["method"], r["judge"]) for r in rows} == {
        (m, j) for m in ("tmi", "tmi_null", "contrast", "random", "cnn_gradient", "cnn_occlusion", "var_gradient")
        for j in ("var", "cnn")}
    for r in rows:
        assert r["n_images"] == "4"
        assert 0.0 <= float(r["insertion_auc"]) <= 1.0 and 0.0 <= float(r["deletion_auc"]) <= 1.0
    per_image = list(csv.DictReader((out / "faithfulness_per_image.csv").open()))
    assert len(per_image) == 4 * 7 * 2
    # reuse of the saved CNN: the table is reproduced exactly
    out2 = tmp_path / "out2"
    assert main(["explain", str(ckpt), "--dataset", "digits", "--out", str(out2), "--n", "0", "--faithfulness", "4",
                 "--steps", "3", "--batch-size", "3", "--cnn-weights", str(out / "cnn.pt")]) == 0
    def auc_columns(rows_: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "map_seconds_per_image"} for r in rows_]

    again = list(csv.DictReader((out2 / "faithfulness.csv").open()))
    assert again and auc_columns(again) == auc_columns(rows)
    # the curves figure drawn again from its CSVs (curves rounded to 6 decimals) is the one the run drew
    import matplotlib.image

    from cil.explain.experiment import redraw_curves

    drawn = matplotlib.image.imread(out / "faithfulness_curves.png")
    again_png = matplotlib.image.imread(redraw_curves(out))
    assert drawn.shape == again_png.shape and abs(drawn - again_png).mean() < 1e-3


def test_cli_explain_reports_bad_input(tmp_path, capsys) -> None:
    assert main(["explain", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "model.pt" in capsys.readouterr().err
    model = scramble(VARModel(digits_config(), classes=range(10)))
    model.save(tmp_path / "m.pt")
    assert main(["explain", str(tmp_path / "m.pt"), "--dataset", "digits", "--out", str(tmp_path / "o"),
                 "--methods", "tmi,saliency"]) == 2
    assert "saliency" in capsys.readouterr().err


def test_a_run_folder_leads_to_its_cells_model_whatever_the_folder_names_order(tmp_path) -> None:
    from cil.errors import UserError
    from cil.explain.experiment import resolve_checkpoint

    for cell in ("varc/seed0", "varc/seed1_order1", "varc/seed2_order2", "varc/seed2_natural"):
        (tmp_path / cell).mkdir(parents=True)
        (tmp_path / cell / "model.pt").write_bytes(b"weights")
    assert resolve_checkpoint(str(tmp_path), "varc", 0)[1] == tmp_path / "varc" / "seed0"
    assert resolve_checkpoint(str(tmp_path), "varc", 1)[1] == tmp_path / "varc" / "seed1_order1"
    with pytest.raises(UserError, match="holds 2 varc cells of seed 2 with a model"):
        resolve_checkpoint(str(tmp_path), "varc", 2)
    assert resolve_checkpoint(str(tmp_path / "varc" / "seed2_order2"))[1] == tmp_path / "varc" / "seed2_order2"
    with pytest.raises(UserError, match=r"holds no varc/seed3\[_<order>\]/model.pt"):
        resolve_checkpoint(str(tmp_path), "varc", 3)
