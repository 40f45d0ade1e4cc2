"""Properties of the VAR model's likelihoods: normalisation, block causality, exact prefixes,
per-class isolation and checkpoint round trips."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from varc.config import VARConfig
from varc.heads import NULL_CLASS
from varc.model import VARModel
from varc.train import as_image_tensor, encode_dataset, train_transformer
from varc_helpers import digits_config, scramble

HEADS = ["embedding", "lora:2", "full"]


def tiny_config(head: str, vocab: int = 3) -> VARConfig:
    # 4x4 images -> 2x2 latent map, scales (1, 2): L = 5 tokens, vocab**5 sequences
    return VARConfig(in_channels=1, image_size=4, downsample=1, tok_channels=4, latent_dim=4, vocab_size=vocab,
                     patch_nums=(1, 2), width=16, depth=2, num_heads=2, head=head)


@pytest.fixture(scope="module")
def digits_images() -> torch.Tensor:
    d = load_digits()
    x = (d.images[:64] * 16).clip(0, 255).astype(np.uint8)
    return as_image_tensor(x)


@pytest.fixture(scope="module")
def digits_labels() -> torch.Tensor:
    return torch.as_tensor(load_digits().target[:64], dtype=torch.long)


# ------------------------------------------------------------------------------------------------
# (a) normalisation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("vocab", [2, 4])
def test_probabilities_of_all_token_sequences_sum_to_one(head: str, vocab: int) -> None:
    model = scramble(VARModel(tiny_config(head, vocab), classes=[0, 1, 2]))
    L = model.seq_len
    seqs_NL = torch.tensor(list(itertools.product(range(vocab), repeat=L)), dtype=torch.long)
    for c in [0, 1, 2, NULL_CLASS]:
        with torch.no_grad():
            logp_N = model.token_log_probs(seqs_NL, c).sum(1).double()
        total = logp_N.exp().sum().item()
        assert abs(total - 1.0) < 1e-5, (c, total)
        # and the class matters: the distributions differ between classes
        if c == 0:
            first = logp_N
        else:
            assert not torch.allclose(first, logp_N)


# ------------------------------------------------------------------------------------------------
# (b) block causality
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_changing_scale_k_leaves_scales_up_to_k_unchanged(head: str) -> None:
    model = scramble(VARModel(digits_config(head), classes=[0, 1]))
    g = torch.Generator().manual_seed(0)
    V, B = model.config.vocab_size, 6
    tokens = [torch.randint(V, (B, p, p), generator=g) for p in model.patch_nums]
    labels = torch.tensor([0, 1, NULL_CLASS, 0, 1, NULL_CLASS])
    with torch.no_grad():
        base_BLV = model.logits(tokens, labels)
        for k in range(model.num_scales):
            changed = [t.clone() for t in tokens]
            changed[k] = (changed[k] + 1 + torch.randint(V - 1, changed[k].shape, generator=g)) % V
            new_BLV = model.logits(changed, labels)
            end = model.scale_ends[k]
            assert torch.equal(new_BLV[:, :end], base_BLV[:, :end]), f"scale {k + 1} leaked into earlier outputs"
            if k + 1 < model.num_scales:  # ... while later scales do see the change
                assert not torch.allclose(new_BLV[:, end:], base_BLV[:, end:])


# ------------------------------------------------------------------------------------------------
# (c) prefix likelihood
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_prefix_log_likelihood_is_the_sum_of_its_token_log_probs(head: str, digits_images, digits_labels) -> None:
    model = scramble(VARModel(digits_config(head), classes=range(10)))
    x, y = digits_images[:16], digits_labels[:16]
    seen_lengths: list[int] = []
    hook = model.trunk.blocks[0].register_forward_hook(lambda m, args, out: seen_lengths.append(out[0].shape[1]))
    with torch.no_grad():
        full_BL = model.token_log_probs(model.encode(x), y)
        for m in range(1, model.num_scales + 1):
            seen_lengths.clear()
            ll = model.log_likelihood(x, y, num_scales=m)
            expected = full_BL[:, : model.prefix_len(m)].sum(1)
            torch.testing.assert_close(ll, expected, rtol=1e-6, atol=1e-5)
            # the transformer ran on the prefix only
            assert seen_lengths and set(seen_lengths) == {model.prefix_len(m)}
        # all classes at once agrees with one class at a time
        scores_BC = model.class_log_likelihoods(x, [3, NULL_CLASS], num_scales=2, chunk_size=5)
        torch.testing.assert_close(scores_BC[:, 0], model.log_likelihood(x, 3, num_scales=2), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(scores_BC[:, 1], model.log_likelihood(x, NULL_CLASS, num_scales=2),
                                   rtol=1e-6, atol=1e-5)
    hook.remove()


# ------------------------------------------------------------------------------------------------
# (d) isolation of per-class parameters
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_training_one_class_leaves_every_other_class_bit_identical(head: str, digits_images, digits_labels) -> None:
    model = scramble(VARModel(digits_config(head), classes=[0, 1, 2]))
    model.add_classes([3])  # a class added later, trained alone on a frozen trunk
    model.freeze_trunk()
    model.freeze_tokenizer()
    others = [0, 1, 2, NULL_CLASS]
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    own = {id(p) for p in model.class_parameters([3])}
    own_names = {n for n, p in model.named_parameters() if id(p) in own}
    with torch.no_grad():
        before_scores = model.class_log_likelihoods(digits_images, others + [3], chunk_size=50)

    train_transformer(model, digits_images[:32], torch.full((32,), 3), params=model.class_parameters([3]),
                      epochs=2, batch_size=8, lr=1e-2, weight_decay=0.1, label_drop=0.25)

    after_state = model.state_dict()
    for name, value in before_state.items():
        if name in own_names:
            continue
        assert torch.equal(after_state[name], value), f"{name} moved"
    assert any(not torch.equal(after_state[n], before_state[n]) for n in own_names), "class 3 did not train"
    with torch.no_grad():
        after_scores = model.class_log_likelihoods(digits_images, others + [3], chunk_size=50)
    assert torch.equal(after_scores[:, :4], before_scores[:, :4])
    assert not torch.equal(after_scores[:, 4], before_scores[:, 4])
    # the requires_grad flags the caller set are restored
    assert not any(p.requires_grad for p in model.trunk_parameters())


def test_class_parameters_are_separate_tensors_per_class() -> None:
    model = VARModel(digits_config("lora:2"), classes=[0, 1])
    p0 = {id(p) for p in model.class_parameters([0])}
    p1 = {id(p) for p in model.class_parameters([1])}
    pn = {id(p) for p in model.class_parameters([], include_null=True)}
    trunk = {id(p) for p in model.trunk_parameters()}
    assert p0 and p1 and pn
    assert not (p0 & p1) and not (p0 & pn) and not (p0 & trunk) and not (pn & trunk)
    every = {id(p) for p in model.parameters()}
    assert every == p0 | p1 | pn | trunk | {id(p) for p in model.tokenizer_parameters()}


def test_new_class_heads_do_not_depend_on_the_order_they_are_added() -> None:
    a = VARModel(digits_config("lora:2"), classes=[0, 1, 2])
    b = VARModel(digits_config("lora:2"), classes=[2])
    b.add_classes([1, 0])
    for c in [0, 1, 2]:
        for pa, pb in zip(a.class_parameters([c]), b.class_parameters([c])):
            assert torch.equal(pa, pb)
    assert b.classes == [0, 1, 2]


def test_null_initialised_class_starts_as_the_unconditional_model(digits_images) -> None:
    model = scramble(VARModel(digits_config("lora:2"), classes=[0]))
    model.add_classes([5], init="null")
    with torch.no_grad():
        s = model.class_log_likelihoods(digits_images[:8], [5, NULL_CLASS, 0])
    assert torch.equal(s[:, 0], s[:, 1])
    assert not torch.equal(s[:, 0], s[:, 2])


def test_scoring_in_batches_gives_each_batch_what_scoring_it_alone_gives(digits_images) -> None:
    model = scramble(VARModel(digits_config("lora:2"), classes=[0, 4, 7]))
    x = digits_images[:10]
    with torch.no_grad():
        batched_NC = model.class_log_likelihoods(x, [7, 0, 4], batch_size=4)
        alone_NC = torch.cat([model.class_log_likelihoods(x[s:s + 4], [7, 0, 4]) for s in (0, 4, 8)])
        whole_NC = model.class_log_likelihoods(x, [7, 0, 4])
        from_tokens_NC = model.class_log_likelihoods(model.encode(x), [7, 0, 4], batch_size=4)
        empty_NC = model.class_log_likelihoods(x[:0], [7, 0], batch_size=4)
        tokens_NCL = model.class_token_log_probs(x, [7, 0, 4], batch_size=4)
        tokens_alone_NCL = torch.cat([model.class_token_log_probs(x[s:s + 4], [7, 0, 4]) for s in (0, 4, 8)])
    assert batched_NC.shape == (10, 3) and torch.equal(batched_NC, alone_NC)
    assert torch.equal(from_tokens_NC, batched_NC)
    assert torch.allclose(batched_NC, whole_NC, rtol=0, atol=1e-3)
    assert empty_NC.shape == (0, 2)
    assert torch.equal(tokens_NCL, tokens_alone_NCL)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.class_log_likelihoods(x, [0], batch_size=0)


def test_unknown_class_is_an_error(digits_images) -> None:
    model = VARModel(digits_config("embedding"), classes=[0, 1])
    with pytest.raises(ValueError, match="add_classes"):
        model.log_likelihood(digits_images[:2], 7)


# ------------------------------------------------------------------------------------------------
# (e) checkpoints
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_save_load_round_trip_gives_identical_likelihoods(head: str, tmp_path, digits_images) -> None:
    model = scramble(VARModel(digits_config(head), classes=[4, 0, 9], seed=3))
    path = tmp_path / "model.pt"
    model.save(path, extra={"note": "test"})
    loaded = VARModel.load(path)
    assert loaded.classes == [0, 4, 9]
    assert loaded.config == model.config
    assert loaded.checkpoint_extra == {"note": "test"}
    with torch.no_grad():
        a = model.class_token_log_probs(digits_images[:20], [0, 4, 9, NULL_CLASS])
        b = loaded.class_token_log_probs(digits_images[:20], [0, 4, 9, NULL_CLASS])
    assert torch.equal(a, b)
    # plain torch.load with weights_only=True reads it too
    payload = torch.load(path, weights_only=True)
    assert set(payload) >= {"config", "classes", "state_dict"}
    assert not list(tmp_path.glob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file


def test_load_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a VAR model checkpoint"):
        VARModel.load(path)


# ------------------------------------------------------------------------------------------------
# tokens, noise, sampling
# ------------------------------------------------------------------------------------------------
def test_encode_shapes_and_feature_noise(digits_images) -> None:
    model = VARModel(digits_config("embedding"))
    x = digits_images[:16]
    tokens = model.encode(x)
    assert [tuple(t.shape) for t in tokens] == [(16, p, p) for p in model.patch_nums]
    assert all(t.dtype == torch.long and 0 <= t.min() and t.max() < model.config.vocab_size for t in tokens)
    assert all(torch.equal(a, b) for a, b in zip(tokens, model.encode(x, noise_std=0.0)))
    n1 = model.encode(x, noise_std=0.5, generator=torch.Generator().manual_seed(1))
    n2 = model.encode(x, noise_std=0.5, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(n1, n2))
    assert not all(torch.equal(a, b) for a, b in zip(n1, tokens))
    flat = model.flatten_tokens(tokens)
    assert flat.shape == (16, model.seq_len)
    assert all(torch.equal(a, b) for a, b in zip(model.split_tokens(flat), tokens))
    cached = encode_dataset(model, x, batch_size=5)
    assert all(torch.equal(a, b) for a, b in zip(cached, tokens))


def test_sample_is_repeatable_and_in_range() -> None:
    model = scramble(VARModel(digits_config("lora:2"), classes=[0, 1]))
    a = model.sample([0, 1, 1], top_k=4, cfg=1.5, generator=torch.Generator().manual_seed(0))
    b = model.sample([0, 1, 1], top_k=4, cfg=1.5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 1, 8, 8)
    assert torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_28_pixel_images_map_to_a_7x7_latent() -> None:
    cfg = VARConfig(image_size=28, downsample=2, patch_nums=(1, 2, 3, 5, 7), tok_channels=4, latent_dim=4,
                    vocab_size=8, width=16, depth=1, num_heads=2)
    model = VARModel(cfg, classes=[0])
    x = torch.rand(2, 1, 28, 28)
    tokens = model.encode(x)
    assert tokens[-1].shape == (2, 7, 7)
    assert model.decode(tokens).shape == (2, 1, 28, 28)
    padded = VARConfig(image_size=30, downsample=2, patch_nums=(1, 2, 4, 8), tok_channels=4, latent_dim=4,
                       vocab_size=8, width=16, depth=1, num_heads=2)
    m2 = VARModel(padded)
    assert m2.decode(m2.encode(torch.rand(2, 1, 30, 30))).shape == (2, 1, 30, 30)


@pytest.mark.parametrize("bad", [dict(patch_nums=(2, 4, 7)), dict(patch_nums=(1, 3, 2, 7)),
                                 dict(patch_nums=(1, 2, 8)), dict(head="lora"), dict(head="lora:0"),
                                 dict(head="big"), dict(width=30, num_heads=4), dict(device="tpu")])
def test_bad_configs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        VARConfig(**bad)


@pytest.mark.parametrize("head", HEADS)
def test_mixed_class_batch_matches_one_class_at_a_time(head: str) -> None:
    """The per-sample adapter path (mixed batches, as in training) and the merged-weight path
    (one class per batch, as in scoring) compute the same distributions."""
    model = scramble(VARModel(digits_config(head), classes=[0, 1, 2]))
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(model.config.vocab_size, (6, p, p), generator=g) for p in model.patch_nums]
    labels = torch.tensor([2, 0, NULL_CLASS, 1, 0, 2])
    with torch.no_grad():
        mixed_BL = model.token_log_probs(tokens, labels)
        for i, c in enumerate(labels.tolist()):
            one_L = model.token_log_probs([t[i : i + 1] for t in tokens], c)[0]
            torch.testing.assert_close(mixed_BL[i], one_L, rtol=1e-5, atol=1e-5)
        pairs_PL = model.pair_token_log_probs(tokens, torch.tensor([5, 0, 5, 3]), torch.tensor([1, 1, NULL_CLASS, 2]),
                                              chunk_size=1)
        torch.testing.assert_close(pairs_PL[0], model.token_log_probs([t[5:6] for t in tokens], 1)[0])
        torch.testing.assert_close(pairs_PL[2], model.token_log_probs([t[5:6] for t in tokens], NULL_CLASS)[0])
        torch.testing.assert_close(pairs_PL[3], model.token_log_probs([t[3:4] for t in tokens], 2)[0])


@pytest.mark.parametrize("head", HEADS)
def test_continuing_from_a_cached_prefix_matches_the_full_pass(head: str) -> None:
    """Scoring the first m scales with their cache kept and continuing a subset of the pairs from
    that cache gives the per-token log-probs of one full pass, and runs only the new positions."""
    model = scramble(VARModel(digits_config(head), classes=[0, 1, 2]))
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(model.config.vocab_size, (5, p, p), generator=g) for p in model.patch_nums]
    image_P, labels_P = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4]), torch.tensor([0, 0, 1, 1, 2, 2, NULL_CLASS, 1])
    seen_lengths: list[int] = []
    hook = model.trunk.blocks[0].register_forward_hook(lambda m, args, out: seen_lengths.append(out[0].shape[1]))
    with torch.no_grad():
        full_PL = model.pair_token_log_probs(tokens, image_P, labels_P, chunk_size=3)
        l2, l3 = model.prefix_len(2), model.prefix_len(3)
        pre_Pl, cache = model.pair_token_log_probs_with_cache(tokens, image_P, labels_P, num_scales=2, chunk_size=3)
        assert cache.length == l2 and len(cache) == len(image_P)
        keep = torch.tensor([6, 1, 4, 5])  # survivors, in any order
        mid_Pl, cache3 = model.pair_token_log_probs_with_cache(tokens, image_P[keep], labels_P[keep], num_scales=3,
                                                               past=cache.select(keep))
        seen_lengths.clear()
        rest_Pl = model.pair_token_log_probs(tokens, image_P[keep[:2]], labels_P[keep[:2]],
                                             past=cache3.select(torch.tensor([0, 1])))
    hook.remove()
    assert set(seen_lengths) == {model.seq_len - l3}  # only the positions not cached yet ran
    torch.testing.assert_close(pre_Pl, full_PL[:, :l2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mid_Pl, full_PL[keep, l2:l3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rest_Pl, full_PL[keep[:2], l3:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cache holds"):
        model.pair_token_log_probs(tokens, image_P[:2], labels_P[:2], past=cache)


@pytest.mark.parametrize("head", HEADS)
def test_keeping_the_cache_leaves_the_numbers_unchanged(head: str) -> None:
    """The ``_with_cache`` variants compute exactly what the plain ones do (a mixed ``full`` batch
    included), and give a cache of every position of every sequence."""
    model = scramble(VARModel(digits_config(head), classes=[0, 1, 2]))
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(model.config.vocab_size, (4, p, p), generator=g) for p in model.patch_nums]
    labels_B = torch.tensor([2, 0, NULL_CLASS, 2])
    with torch.no_grad():
        x_BlC = model.tokenizer.teacher_inputs(tokens, 3)
        logits_BlV, cache = model.forward_logits_with_cache(x_BlC, labels_B)
        assert torch.equal(logits_BlV, model.forward_logits(x_BlC, labels_B))
        assert cache.length == model.prefix_len(3) and len(cache) == 4
        pairs = (tokens, torch.tensor([3, 0, 1]), torch.tensor([1, NULL_CLASS, 1]), 2)
        lp_Pl, cache = model.pair_token_log_probs_with_cache(*pairs)
        assert torch.equal(lp_Pl, model.pair_token_log_probs(*pairs))
        assert cache.length == model.prefix_len(2) and len(cache) == 3
        assert model.pair_token_log_probs(tokens, torch.tensor([], dtype=torch.long), [], 2).shape == (0, 5)
        with pytest.raises(ValueError, match="at least one pair"):
            model.pair_token_log_probs_with_cache(tokens, torch.tensor([], dtype=torch.long), [], 2)


def test_next_scale_input_is_f_hat_through_scale_k_at_the_next_scale() -> None:
    """Scale k+1's teacher-forcing input is f_hat of the tokens of scales 0..k, downsampled to pn_{k+1}."""
    model = scramble(VARModel(digits_config("embedding")))
    tok, ends = model.tokenizer, model.scale_ends
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randint(model.config.vocab_size, (3, p, p), generator=g) for p in model.patch_nums]
    with torch.no_grad():
        x_BlC = tok.teacher_inputs(tokens)
        for k in range(model.num_scales - 1):
            x_BpC = tok.next_scale_input(tok.f_hat(tokens[: k + 1]), k)
            assert x_BpC.shape == (3, model.patch_nums[k + 1] ** 2, model.config.latent_dim)
            assert torch.equal(x_BpC, x_BlC[:, ends[k] - 1 : ends[k + 1] - 1])
    with pytest.raises(ValueError, match="no next scale"):
        tok.next_scale_input(tok.f_hat(tokens), model.num_scales - 1)


@pytest.mark.parametrize("shape,side", [((1, 8, 8), 4), ((1, 28, 28), 7), ((3, 32, 32), 8), ((1, 20, 20), 5)])
def test_presets_fit_their_image_shapes(shape: tuple[int, int, int], side: int) -> None:
    from varc.config import preset_for_shape

    cfg = preset_for_shape(shape)
    assert (cfg.in_channels, cfg.image_size) == shape[:2]
    assert cfg.latent_side == side and cfg.patch_nums[-1] == side and cfg.patch_nums[0] == 1
    assert VARConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("head", ["embedding", "lora:2"])
def test_head_gradients_are_bit_identical_from_run_to_run_on_two_threads(head: str) -> None:
    # a mixed-class batch gathers each sample's head; summing those rows back into each head's
    # gradient must not depend on how two CPU threads share the work (a seed then fixes a run)
    model = VARModel(digits_config(head=head), seed=0)
    model.add_classes(list(range(4)))
    g = torch.Generator().manual_seed(0)
    labels_B = torch.randint(0, 4, (4096,), generator=g)
    cond_BD, adapters = model.heads.condition(labels_B)
    weights = [torch.randn(cond_BD.shape, generator=g)]
    weights += [torch.randn(t.shape, generator=g) for pair in adapters.values() for t in pair]
    params = model.class_parameters(list(range(4)))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(8):
            cond_BD, adapters = model.heads.condition(labels_B)
            outs = [cond_BD] + [t for pair in adapters.values() for t in pair]
            loss = sum((o * w).sum() for o, w in zip(outs, weights))
            grads.append(torch.autograd.grad(loss, params))
    finally:
        torch.set_num_threads(threads)
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))
