"""The VAR generative classifier as a class-incremental strategy: VARC and A-VARC+.

Per experience (Chen, Inouye, Gao 2025; the class-incremental recipe is this suite's):
- first experience: train the multi-scale VQ tokenizer (on the experience's images, or on an
  unlabeled pretraining set named by ``tokenizer_data``), then the trunk with the first
  classes' heads and the null class; the tokenizer is frozen from then on;
- later experiences, ``trunk: frozen``: only the new classes' heads are trained (an optimizer
  that holds nothing else), so every earlier class's parameters stay bit-identical;
  ``trunk: finetune`` trains trunk and every head on the new data (no protection);
- A-VARC+ adds condition-contrastive fine-tuning of the new heads (negatives from the same
  experience), candidate pruning on the first scales and likelihood smoothing at test time.

A non-SGD strategy (``cil.strategies.base.ScoreClassifier``): ``scores`` is a [B, n_classes]
matrix, log p(x|y) + log p(y) for the classes seen so far and -inf for the others, so accuracy,
forgetting and BWT apply unchanged; likelihood training has its own schedule in ``update``.

With the trunk frozen, an old class's log p(x|y) never changes, so the classifier remembers it
(``varc.memo.ScoreMemo``): the evaluation after experience k scores only the new classes, instead
of every class seen so far (5.5x fewer class scorings over 10 experiences of 2 classes). Plain
scoring remembers log p(x|y) per image; A-VARC+ remembers it per tokenisation and per scale, so
that its pruning stages read back the prefixes they need (its candidates change as classes
arrive) and a pair is scored only on the scales no earlier evaluation reached.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Literal

from cil.errors import UserError
from cil.strategies.base import ScoreClassifier
from cil.strategies.registry import StrategyContext, register
from cil.typecheck import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, check_keys, coerce

def _scoring(prune: list, smooth_samples: int, smooth_std: float, where: str, num_scales: int):
    """A validated ScoringConfig; bad settings are UserErrors naming the protocol key."""
    from varc.classifier import ScoringConfig, parse_schedule

    try:
        stages = parse_schedule(prune, num_scales) if prune else ()
        return ScoringConfig(prune=stages, smooth_samples=smooth_samples, smooth_std=smooth_std)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from exc


# VARConfig fields a protocol may not set under ``model``, and what sets them instead.
_MODEL_KEYS_SET_ELSEWHERE = {"in_channels": "the dataset's images", "image_size": "the dataset's images",
                             "head": "the strategy's own 'head' key", "device": "the protocol's 'device'"}
_REPORT_KEYS = ("prune", "smooth_samples", "smooth_std")


def check_settings(params: dict, *, where: str, image_shape: tuple[int, int, int] | None) -> None:
    """Validate the VAR settings a type hint cannot: the nested ``model`` mapping (known keys,
    types; with the dataset's image shape, the whole model configuration), ``head``,
    ``tokenizer_data``, the pruning schedule, smoothing, augmentation, weight averaging, the
    held-out fraction and ``report_settings``."""
    import dataclasses
    import typing

    from varc.config import VARConfig, parse_head, preset_for_shape

    hints = typing.get_type_hints(VARConfig)
    allowed = [f.name for f in dataclasses.fields(VARConfig) if f.name not in _MODEL_KEYS_SET_ELSEWHERE]
    for key, value in params["model"].items():
        if key in _MODEL_KEYS_SET_ELSEWHERE:
            raise UserError(f"{where}.model.{key} is set by {_MODEL_KEYS_SET_ELSEWHERE[key]}, not here; "
                            f"allowed keys: {', '.join(allowed)}")
        if key not in allowed:
            raise UserError(f"{where}.model: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        coerce(value, hints[key], f"{where}.model.{key}")
    try:
        parse_head(params["head"])
    except ValueError as exc:
        raise UserError(f"{where}.head: {exc}") from None
    if params["tokenizer_data"] is not None:
        from cil.data import available_datasets

        name = params["tokenizer_data"]
        if not name.startswith("npz:") and name not in available_datasets():
            raise UserError(f"{where}.tokenizer_data: unknown dataset {name!r}; choose one of: "
                            f"{', '.join(available_datasets())}")
    reports = [check_keys(extra, _REPORT_KEYS, f"{where}.report_settings[{i}]")
               for i, extra in enumerate(params["report_settings"])]
    if params["augment_copies"] == 0 and params["augment_max_shift"] != 1:
        raise UserError(f"{where}.augment_max_shift is {params['augment_max_shift']} but augment_copies is 0, "
                        "so no image is shifted; set augment_copies >= 1 or remove augment_max_shift")
    if not params["ema_decay"] < 1:
        raise UserError(f"{where}.ema_decay is {params['ema_decay']}; use a decay below 1 (e.g. 0.99), "
                        "or 0 for no weight averaging")
    if params["holdout"] and params["ema_decay"]:
        raise UserError(f"{where}: holdout keeps each epoch's weights, ema_decay their average; set one of "
                        "them (the other to 0)")
    if params["cca_old_samples"] and not params["cca_epochs"]:
        raise UserError(f"{where}.cca_old_samples is {params['cca_old_samples']} but cca_epochs is 0, so no CCA "
                        "runs to use them; set cca_epochs >= 1 or remove cca_old_samples")
    if not params["holdout"] < 0.5:
        raise UserError(f"{where}.holdout is {params['holdout']}; hold out less than half of each class's "
                        "images (e.g. 0.1), or 0 to train on all of them")
    if params["report_classes"] and params["trunk"] != "frozen":
        raise UserError(f"{where}.report_classes needs trunk: frozen (with a fine-tuned trunk the final "
                        "model against its first classes is not the model that had learnt only them); "
                        "remove report_classes or set trunk: frozen")
    if image_shape is None:
        return
    try:
        cfg = preset_for_shape(image_shape, head=params["head"], device="cpu", **params["model"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}.model: {exc}") from None
    num_scales = len(cfg.patch_nums)
    _scoring(params["prune"], params["smooth_samples"], params["smooth_std"], where, num_scales)
    for i, extra in enumerate(reports):
        _scoring(extra.get("prune", []), extra.get("smooth_samples", 1), extra.get("smooth_std", 0.0),
                 f"{where}.report_settings[{i}]", num_scales)


def report_order(n_images: int):
    """A fixed random order (seed 0) of ``n_images`` test images: the inference report times the
    first ``report_limit`` of them; ``benchmarks/pruning_sweep.py`` draws the same order, so it can
    time those images and choose schedules on the ones after them."""
    import torch

    return torch.randperm(n_images, generator=torch.Generator().manual_seed(0))


def report_subset(n_images: int, limit: int | None):
    """Indices of the inference report's images: the first ``limit`` of ``report_order``, or all
    of them in stream order."""
    import torch

    return report_order(n_images)[:limit] if limit and limit < n_images else torch.arange(n_images)


class VARClassifier(ScoreClassifier):
    """A VARModel as a class-incremental classifier: ``update`` trains on one experience (see the
    module docstring), ``scores`` is log p(x|y) + log p(y) for the classes seen, -inf for the
    others. It checkpoints, saves its model (model.pt) and reports the cost of its inference
    settings on the final model."""

    checkpoints = True
    saves_model = True
    reports_inference = True

    def __init__(self, *, n_classes: int, image_shape: tuple[int, int, int], settings: dict, name: str,
                 seed: int, device, eval_mb_size: int, log=None) -> None:
        from varc.config import preset_for_shape
        from varc.memo import ScoreMemo
        from varc.model import VARModel

        s = self.settings = settings
        self.n_classes, self.label, self.seed, self.eval_mb_size, self.log = n_classes, name, seed, eval_mb_size, log
        try:
            cfg = preset_for_shape(image_shape, head=s["head"], device=str(device), **s["model"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"strategies.{name}.model: {exc}") from exc
        self.var = VARModel(cfg, seed=seed, device=device)
        self.scoring = _scoring(s["prune"], s["smooth_samples"], s["smooth_std"], f"strategies.{name}",
                                self.var.num_scales)
        self.report_scorings = self._report_scorings(name, self.var.num_scales, self.scoring)
        too_many = [n for n in s["report_classes"] if n >= n_classes]
        if too_many:
            raise UserError(f"strategies.{name}.report_classes: {too_many[0]} is not below the dataset's "
                            f"{n_classes} classes (the report against every class is always made)")
        self.counts: dict[int, int] = {}
        self.exp_index = 0
        # log p(x|y) per image (plain scoring), or per tokenisation and scale (pruning, smoothing)
        self.memo = ScoreMemo(n_classes, width=1 if self.scoring.plain else self.var.num_scales)

    def _report_scorings(self, name: str, n: int, main) -> list:
        """Plain VARC, each A-VARC+ inference part alone, the extra settings, the full setting."""
        out = [_scoring([], 1, 0.0, name, n)]
        if main.prune:
            out.append(_scoring([list(st) for st in main.prune], 1, 0.0, name, n))
        if main.smooth_samples > 1:
            out.append(_scoring([], main.smooth_samples, main.smooth_std, name, n))
        for i, extra in enumerate(self.settings["report_settings"]):
            where = f"strategies.{name}.report_settings[{i}]"
            extra = check_keys(extra, _REPORT_KEYS, where)
            out.append(_scoring(extra.get("prune", []), extra.get("smooth_samples", 1),
                                extra.get("smooth_std", 0.0), where, n))
        return out + [main]

    def _log(self, msg: str) -> None:
        if self.log is not None:
            self.log(f"  [{self.label}] {msg}")

    def log_prior_C(self, classes):
        from varc.classifier import log_prior

        return log_prior(classes, self.counts if self.settings["prior"] == "frequency" else None)

    # -- scoring ------------------------------------------------------------------------------------
    def scores(self, x_BCHW):
        import torch

        from varc.classifier import score
        from varc.memo import digests

        classes = self.var.classes
        out = torch.full((x_BCHW.shape[0], self.n_classes), float("-inf"), device=x_BCHW.device)
        if not classes:
            return out
        prior_C = self.log_prior_C(classes)
        if not self.scoring.plain:  # the candidates depend on every class: the memo holds scales
            res = score(self.var, x_BCHW, classes, self.scoring, log_prior_C=prior_C,
                        generator=torch.Generator().manual_seed(0), memo=self.memo)
            out[:, classes] = res.scores_BC.to(out.device)
            return out
        ll_BC = self.memo.scores(digests(x_BCHW), classes,
                                 lambda b, some: score(self.var, x_BCHW[b.to(x_BCHW.device)], some,
                                                       self.scoring).scores_BC)[..., 0]
        out[:, classes] = (ll_BC.to(prior_C.device) + prior_C.to(torch.float32)).to(out.device)
        return out

    # -- training -----------------------------------------------------------------------------------
    def update(self, images, labels) -> None:
        """Train on one experience: the tokenizer (first experience only), then the trunk and the
        first heads, or only the new classes' heads; then CCA for A-VARC+."""
        seed = self.seed * 1000 + self.exp_index
        new = sorted(set(labels.tolist()) - set(self.var.classes))
        first = not self.var.classes
        t0 = time.perf_counter()
        if first:
            self._train_tokenizer(images, seed)
        self.var.add_classes(new, init="random" if first else self.settings["head_init"])
        tokens, train_labels, held = self._training_set(images, labels, seed)
        self._train_likelihood(new, tokens, train_labels, held, first=first, seed=seed)
        self._contrast(new, tokens, train_labels, seed)
        for c in new:
            self.counts[c] = self.counts.get(c, 0) + int((labels == c).sum())
        self._log(f"exp {self.exp_index + 1}: trained classes {new} in {time.perf_counter() - t0:.1f} s")
        self.exp_index += 1

    def _train_tokenizer(self, images, seed: int) -> None:
        """Fit the multi-scale VQ tokenizer on the first experience's images (or on the unlabeled
        ``tokenizer_data``), then freeze it for the rest of the stream."""
        from varc import train as vt

        s = self.settings
        if s["tokenizer_data"]:
            from cil.data import load_dataset

            tok_images = vt.as_image_tensor(load_dataset(s["tokenizer_data"]).x_train)
            if tuple(tok_images.shape[1:]) != tuple(images.shape[1:]):
                raise UserError(f"strategies.{self.label}.tokenizer_data: images of {s['tokenizer_data']!r} are "
                                f"{tuple(tok_images.shape[1:])}, the protocol's are {tuple(images.shape[1:])}")
            images = tok_images
        vt.train_tokenizer(self.var, images, epochs=s["tokenizer_epochs"], batch_size=s["batch_size"],
                           lr=s["tokenizer_lr"], seed=seed,
                           progress=lambda r: self._log(
                               f"tokenizer epoch {r['epoch']}/{r['epochs']}: recon mse {r['recon_mse']:.4f}, "
                               f"code usage {r['code_usage']:.2f} ({r['seconds']:.1f} s)"))
        self.var.freeze_tokenizer()

    def _training_set(self, images, labels, seed: int):
        """(tokens, labels, held) to train on: the ``holdout`` part set aside as (tokens, labels)
        (None without it), the rest with its shifted copies (``augment_copies``), tokenised."""
        from varc import train as vt

        s, held = self.settings, None
        if s["holdout"]:
            fit_idx, held_idx = self._holdout(labels, seed)
            held = (vt.encode_dataset(self.var, images[held_idx]), labels[held_idx])
            images, labels = images[fit_idx], labels[fit_idx]
        if s["augment_copies"]:
            images = vt.shifted_copies(images, copies=s["augment_copies"], max_shift=s["augment_max_shift"],
                                       seed=seed)
            labels = labels.repeat(1 + s["augment_copies"])
        return vt.encode_dataset(self.var, images), labels, held

    def _train_likelihood(self, new: list[int], tokens, labels, held, *, first: bool, seed: int) -> None:
        """Maximum likelihood: trunk and heads together on the first experience (or always, with
        ``trunk: finetune``), else each new head alone. With ``held``, every group keeps the epoch
        of its lowest held-out NLL: the trunk on its classes' mean, each head on its own class."""
        from varc import train as vt

        s, var = self.settings, self.var
        if first or s["trunk"] == "finetune":
            self.memo.clear()  # every class's likelihood changes with the trunk
            params = var.transformer_parameters()
            epochs, lr, drop, phase = s["trunk_epochs"], s["trunk_lr"], None, "trunk+heads"
            groups, judges = {"trunk+heads": params}, {"trunk+heads": new}
        else:
            params = var.class_parameters(new)
            epochs, lr, drop, phase = s["head_epochs"], s["head_lr"], 0.0, "new heads"
            groups = {c: var.class_parameters([c]) for c in new}
            judges = {c: [c] for c in new}
        keep = vt.KeepBest(groups) if held else None

        def on_epoch(r: dict) -> None:
            line = (f"exp {self.exp_index + 1} {phase} epoch {r['epoch']}/{r['epochs']}: "
                    f"nll/image {r['nll_per_image']:.2f} ({r['seconds']:.1f} s)")
            if keep is not None:
                per_class = vt.held_out_nll(var, *held)
                keep.observe({k: sum(per_class[c] for c in cs) / len(cs) for k, cs in judges.items()})
                line += f", held-out nll/image {sum(per_class.values()) / len(per_class):.2f}"
            self._log(line)

        vt.train_transformer(var, labels=labels, tokens=tokens, params=params, epochs=epochs,
                             batch_size=s["batch_size"], lr=lr, label_drop=drop, seed=seed,
                             ema_decay=s["ema_decay"], progress=on_epoch)
        if keep is not None:
            chosen = keep.restore()
            self._log(f"exp {self.exp_index + 1}: kept the epochs with the lowest held-out nll: "
                      + ", ".join(f"{k}: {e}/{epochs}" for k, e in chosen.items()))

    def _contrast(self, new: list[int], tokens, labels, seed: int) -> None:
        """A-VARC+'s condition-contrastive fine-tuning of the new heads, negatives drawn from the
        experience's other new classes (none with a single new class: skipped)."""
        s = self.settings
        if s["cca_epochs"] == 0:
            return
        if len(new) < 2:
            self._log(f"exp {self.exp_index + 1}: one new class, no negatives for CCA; skipped")
            return
        from varc.cca import cca_finetune

        old = [c for c in self.var.classes if c not in new]
        negatives = self._sampled_images(old, s["cca_old_samples"], seed) if s["cca_old_samples"] and old else None
        cca_finetune(self.var, tokens, labels, params=self.var.class_parameters(new), negative_pool=new,
                     epochs=s["cca_epochs"], lr=s["cca_lr"], beta=s["cca_beta"], lam=s["cca_lambda"],
                     batch_size=s["batch_size"], seed=seed, negatives=negatives,
                     progress=lambda r: self._log(f"exp {self.exp_index + 1} CCA epoch {r['epoch']}/{r['epochs']}: "
                                                  f"loss {r['loss']:.4f} pair acc {r['pair_accuracy']:.3f} "
                                                  f"({r['seconds']:.1f} s)"))

    def _sampled_images(self, classes: list[int], per_class: int, seed: int) -> list:
        """Token maps of ``per_class`` images drawn from each of these classes' heads, tokenised
        as a test image is: what the earlier classes look like, with no image of theirs stored."""
        import torch

        from varc import train as vt

        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        labels = [c for c in classes for _ in range(per_class)]
        images = torch.cat([self.var.sample(labels[i:i + 256], generator=g) for i in range(0, len(labels), 256)])
        self._log(f"exp {self.exp_index + 1}: sampled {per_class} images of each of the {len(classes)} earlier "
                  f"classes as CCA negatives ({time.perf_counter() - t0:.1f} s)")
        return vt.encode_dataset(self.var, images)

    def _holdout(self, labels, seed: int):
        """(fit, held-out) indices: ``holdout`` of each class's images, stratified and seeded."""
        import numpy as np

        from cil.data.split import stratified_split

        y = labels.numpy()
        fit_idx, held_idx = stratified_split(y, test_fraction=self.settings["holdout"], seed=seed)
        for c in np.unique(y):
            n_held = int((y[held_idx] == c).sum())
            if n_held == 0 or n_held == int((y == c).sum()):
                raise UserError(f"strategies.{self.label}.holdout: {self.settings['holdout']} of class {int(c)}'s "
                                f"{int((y == c).sum())} training images leaves {n_held} held out; choose a "
                                "fraction that holds out at least one image and keeps at least one")
        return fit_idx, held_idx

    # -- checkpoints (the runner resumes an interrupted protocol from these) ------------------------
    def state_dict(self) -> dict:
        return {"var": {k: v.detach().cpu() for k, v in self.var.state_dict().items()},
                "classes": list(self.var.classes), "counts": dict(self.counts), "exp_index": self.exp_index,
                "memo": self.memo.state()}  # a resumed run re-scores nothing it had scored

    def load_state_dict(self, state: dict) -> None:
        self.var.add_classes(state["classes"])
        self.var.load_state_dict(state["var"])
        self.var.freeze_tokenizer()
        self.counts = {int(k): int(v) for k, v in state["counts"].items()}
        self.exp_index = int(state["exp_index"])
        if "memo" in state:
            self.memo.load(state["memo"])
        else:  # a checkpoint written before the memo was saved
            self.memo.clear()

    def model_bytes(self) -> bytes:
        """The trained VARModel's file (model.pt beside the results, for `cil explain RUN_DIR`)."""
        return self.var.to_bytes()

    # -- cost of each inference setting on the final model ------------------------------------------
    def inference_report(self, images, labels) -> list[dict]:
        """Accuracy, images/s and token-forwards per image of every inference setting, on a fixed
        random subset (``report_limit``) of the test images (all of them, stream order): against
        every class learnt, and against the first N learnt for each N of ``report_classes``, on
        those classes' images. With the trunk frozen, old classes' parameters never change, so the
        final model restricted to the first N classes scores exactly as the model did when it had
        learnt only them: how the cost of scoring grows as classes arrive, from one model."""
        import torch

        keep = report_subset(len(labels), self.settings["report_limit"])
        images, labels = images[keep], labels[keep]
        learnt = list(self.counts)  # in the order the classes were learnt
        counts = [n for n in self.settings["report_classes"] if n < len(learnt)] + [len(learnt)]
        scorings = []  # each setting once, in the order given
        for cfg in self.report_scorings:
            if cfg.name not in {c.name for c in scorings}:
                scorings.append(cfg)
        rows = []
        for n in counts:
            if n < len(learnt):
                classes = sorted(learnt[:n])
                mask = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
            else:  # every class learnt, on every image
                classes, mask = self.var.classes, torch.ones_like(labels, dtype=torch.bool)
            for cfg in scorings:
                rows.append(self._measure(cfg, images[mask], labels[mask], classes))
                self._log(f"inference {rows[-1]['setting']} against {n} classes: accuracy "
                          f"{rows[-1]['accuracy']:.4f}, {rows[-1]['images_per_second']:.1f} images/s")
        return rows

    def _measure(self, cfg, images, labels, classes: list[int]) -> dict:
        """One inference setting against ``classes`` on these images: accuracy and cost."""
        import torch

        from varc.classifier import score

        var = self.var
        prior = self.log_prior_C(classes)
        correct, forwards = 0, 0
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        for st in range(0, len(images), self.eval_mb_size):
            x = images[st:st + self.eval_mb_size].to(var.device)
            res = score(var, x, classes, cfg, log_prior_C=prior, generator=g)
            correct += int((res.predict(classes).cpu() == labels[st:st + self.eval_mb_size]).sum())
            forwards += res.token_forwards
        sec = time.perf_counter() - t0
        n = len(labels)
        return {"setting": cfg.name, "classes": len(classes), "accuracy": correct / n,
                "images_per_second": n / sec, "token_forwards_per_image": forwards / n,
                "seconds_per_image": sec / n}


def build_varc(
    ctx: StrategyContext,
    *,
    model: dict = {},  # VARConfig overrides, e.g. {width: 96, depth: 3}; preset chosen from the image shape
    head: str = "lora:8",  # per-class capacity: embedding | lora:<rank> | full
    head_init: Literal["random", "null"] = "null",  # new class starts as a copy of the null class
    trunk: Literal["frozen", "finetune"] = "frozen",
    tokenizer_data: str | None = None,  # dataset whose training images train the tokenizer; None = exp 1
    tokenizer_epochs: PositiveInt = 3,
    tokenizer_lr: PositiveFloat = 2e-3,
    trunk_epochs: PositiveInt = 4,  # trunk + first heads, first experience
    trunk_lr: PositiveFloat = 2e-3,
    head_epochs: PositiveInt = 4,  # new heads, later experiences
    head_lr: PositiveFloat = 5e-3,
    batch_size: PositiveInt = 64,
    augment_copies: NonNegativeInt = 0,  # trunk and heads also train on this many shifted copies of each image
    augment_max_shift: PositiveInt = 1,  # ... each moved up to this many pixels in each direction
    ema_decay: NonNegativeFloat = 0.0,  # trunk and heads end as this moving average of their weights; 0 = off
    holdout: NonNegativeFloat = 0.0,  # hold out this fraction of each class's images; keep the epoch best on them
    prior: Literal["uniform", "frequency"] = "uniform",
    prune: list = [],  # [[num_scales, keep(, margin_nats)], ..., ["full", 1]]; [] = every class on all scales
    smooth_samples: PositiveInt = 1,
    smooth_std: NonNegativeFloat = 0.0,
    cca_epochs: NonNegativeInt = 0,
    cca_lr: PositiveFloat = 1e-4,
    cca_beta: PositiveFloat = 0.02,
    cca_lambda: NonNegativeFloat = 1.0,
    cca_old_samples: NonNegativeInt = 0,  # images sampled from each earlier class's head as extra CCA negatives
    report_settings: list = [],  # extra inference settings to time on the final model
    report_limit: PositiveInt | None = None,  # inference report on a fixed random N of the test images
    report_classes: list[PositiveInt] = [],  # also report against the first N classes learnt, for each N (frozen trunk)
) -> VARClassifier:
    """VARC: a VAR model as generative classifier, argmax_y log p(x|y) + log p(y) (Chen, Inouye, Gao 2025)."""
    settings = {k: v for k, v in locals().items() if k != "ctx"}
    return VARClassifier(n_classes=ctx.n_classes, image_shape=ctx.image_shape, settings=settings,
                         name=ctx.name or "varc", seed=ctx.seed, device=ctx.device, eval_mb_size=ctx.eval_mb_size,
                         log=(lambda line: print(line, flush=True)) if ctx.progress else None)


def _variant(fn, doc: str, **defaults):
    """The same builder with other defaults (and its own docstring), for the registry."""

    @functools.wraps(fn)
    def wrapper(ctx, **kwargs):
        return fn(ctx, **{**defaults, **kwargs})

    sig = inspect.signature(fn)
    wrapper.__signature__ = sig.replace(parameters=[
        p.replace(default=defaults[p.name]) if p.name in defaults else p for p in sig.parameters.values()])
    wrapper.__doc__ = doc
    return wrapper


# The VAR classifier trains with its own schedule (its epochs, learning rates and batch size are
# its own keys); of the protocol's training settings it reads only the evaluation minibatch.
# Costs: over Split MNIST's 54 cells (training, evaluation and the robustness track) a VARC cell
# took about 40x and an A-VARC+ cell 125x a naive cell.
register("varc", check=check_settings, uses_training=("eval_mb_size",), cost=40)(build_varc)
build_avarc_plus = register("avarc_plus", check=check_settings, uses_training=("eval_mb_size",), cost=125)(_variant(
    build_varc,
    "A-VARC+: VARC with CCA fine-tuning, candidate pruning and likelihood smoothing (Chen, Inouye, Gao 2025).",
    prune=[[2, 3], ["full", 1]], smooth_samples=2, smooth_std=0.05, cca_epochs=1,
))
