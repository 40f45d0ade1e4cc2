"""Throughput of the VAR model: training and likelihood tokens/s, tokenising images/s, and the
model's FLOPs against a dense-matmul rate measured in the same run (a utilisation ratio).

    python benchmarks/bench_varc.py                      # MNIST preset, CPU, 1 thread
    python benchmarks/bench_varc.py --device auto --set width=128 --set depth=4

It measures and prints; nothing here is a test. Content does not change the cost of any
operation, so random images and tokens stand in for data. FLOPs are counted by
``torch.utils.flop_counter`` (matmuls, convolutions, attention), per (image, class) pair.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from cil.config import field_overrides
from varc.config import PRESETS, preset
from varc.model import VARModel, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float) -> float:
    """Seconds per call of ``fn`` (one warm-up call, then repeat for at least ``min_seconds``)."""
    fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / n


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, min_seconds: float) -> float:
    """FLOP/s of an n x n by n x n matrix product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, min_seconds)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist", choices=sorted(PRESETS))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config override (repeatable)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=100, help="images per likelihood call (x classes pairs)")
    ap.add_argument("--encode-batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = field_overrides(args.set)
    device = resolve_device(args.device)
    cfg = preset(args.preset, device=str(device), **overrides)
    model = VARModel(cfg, classes=range(args.classes), device=device)
    C, L, S = args.classes, model.seq_len, cfg.image_size
    g = torch.Generator().manual_seed(0)
    classes = list(range(C))
    fp = dict(device=device.type, threads=args.threads if device.type == "cpu" else None)

    # dense matmul reference (fp32 on CPU, bf16 on GPU: the precision the model runs in)
    mm_dtype = torch.bfloat16 if (device.type == "cuda" and cfg.precision != "fp32") else torch.float32
    mm_n = 4096 if device.type == "cuda" else 1024
    peak = matmul_rate(device, mm_dtype, mm_n, args.seconds)

    # tokenising
    images = torch.rand(args.encode_batch, cfg.in_channels, S, S, generator=g).to(device)
    with torch.no_grad():
        t_enc = timed(lambda: model.encode(images), device, args.seconds)
    enc_flops = count_flops(lambda: model.encode(images[:1]))

    # likelihood evaluation: every image under every class
    tokens = [torch.randint(cfg.vocab_size, (args.eval_images, p, p), generator=g).to(device) for p in cfg.patch_nums]
    with torch.no_grad():
        t_eval = timed(lambda: model.class_log_likelihoods(tokens, classes), device, args.seconds)
    pair_flops = count_flops(lambda: model.class_log_likelihoods([t[:1] for t in tokens], [0]))
    eval_pairs_per_s = args.eval_images * C / t_eval

    # training: forward + backward + AdamW step on a mixed-class batch
    tb = [torch.randint(cfg.vocab_size, (args.train_batch, p, p), generator=g).to(device) for p in cfg.patch_nums]
    yb = torch.randint(C, (args.train_batch,), generator=g).to(device)
    params = model.transformer_parameters()
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        loss = -model.token_log_probs(tb, yb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = timed(step, device, args.seconds)
    train_flops = count_flops(step) / args.train_batch

    r = {
        "config": cfg.to_dict(), "seq_len": L, "classes": C, **fp,
        "transformer_params": sum(p.numel() for p in model.trunk_parameters()),
        "params_per_class": sum(p.numel() for p in model.class_parameters([0])),
        "tokenizer_params": sum(p.numel() for p in model.tokenizer_parameters()),
        "matmul_gflops": peak / 1e9, "matmul_dtype": str(mm_dtype).replace("torch.", ""), "matmul_n": mm_n,
        "encode_images_per_s": args.encode_batch / t_enc,
        "encode_mflops_per_image": enc_flops / 1e6,
        "eval_tokens_per_s": eval_pairs_per_s * L,
        "eval_images_per_s": eval_pairs_per_s / C,
        "eval_mflops_per_pair": pair_flops / 1e6,
        "eval_mflops_per_image": pair_flops * C / 1e6,
        "eval_utilisation": pair_flops * eval_pairs_per_s / peak,
        "train_tokens_per_s": args.train_batch * L / t_train,
        "train_images_per_s": args.train_batch / t_train,
        "train_mflops_per_image": train_flops / 1e6,
        "train_utilisation": train_flops * args.train_batch / t_train / peak,
    }
    print(f"VAR model {args.preset} {overrides or ''}: L = {L} tokens, width {cfg.width}, depth {cfg.depth}, "
          f"head {cfg.head}, {r['transformer_params']:,} trunk + {r['params_per_class']:,} per-class parameters")
    print(f"device {device}" + (f", {args.threads} thread(s)" if device.type == "cpu" else ""))
    print(f"dense matmul ({mm_n}^3, {r['matmul_dtype']}):  {r['matmul_gflops']:.1f} GFLOP/s")
    print(f"tokenising:           {r['encode_images_per_s']:,.0f} images/s  ({r['encode_mflops_per_image']:.2f} MFLOP/image)")
    print(f"likelihood eval:      {r['eval_tokens_per_s']:,.0f} tokens/s = {r['eval_images_per_s']:,.1f} images/s "
          f"x {C} classes  ({r['eval_mflops_per_image']:.1f} MFLOP/image, utilisation {r['eval_utilisation']:.2f})")
    print(f"training:             {r['train_tokens_per_s']:,.0f} tokens/s = {r['train_images_per_s']:,.1f} images/s  "
          f"({r['train_mflops_per_image']:.1f} MFLOP/image, utilisation {r['train_utilisation']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main()
