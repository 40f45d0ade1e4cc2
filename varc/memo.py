"""A table of per-class scores remembered per input, for classifiers whose old classes never change.

A generative classifier trained class by class (VARC with a frozen trunk, one VAE per class)
scores an old class exactly as it did before: the evaluation after experience k need only score
the new classes. :class:`ScoreMemo` keeps, for every input it has seen (keyed by a digest of the
bytes that fix the score: an image, a tokenisation, or an image and its place in a batch), a row
[n_classes, width] of float32 scores, NaN where a class has not been scored yet; ``width`` > 1
holds parts of a score (e.g. one log-likelihood per VAR scale, so a prefix can be read back).

The owner decides when the table is valid: it calls :meth:`clear` or :meth:`forget` whenever
parameters that produced remembered scores may change, and saves :meth:`state` with its
checkpoints (tensors only, so a checkpoint loads with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch
from torch import Tensor

DIGEST_BYTES = 16


def digests(x_B: Tensor, salts: Sequence[bytes] | None = None) -> list[bytes]:
    """One key per row of ``x_B`` (any shape [B, ...]): a digest of the row's bytes and dtype,
    followed by ``salts[b]`` when given (what else fixes the score, e.g. the row's batch place)."""
    flat = x_B.detach().to("cpu").contiguous().reshape(x_B.shape[0], -1)
    tag = str(flat.dtype).encode()
    rows = flat.numpy()
    if salts is not None and len(salts) != len(rows):
        raise ValueError(f"{len(salts)} salts for {len(rows)} rows")
    return [hashlib.blake2b(row.tobytes() + tag + (salts[b] if salts is not None else b""),
                            digest_size=DIGEST_BYTES).digest() for b, row in enumerate(rows)]


class ScoreMemo:
    """Scores [n_classes, width] per key; see the module docstring."""

    def __init__(self, n_classes: int, width: int = 1) -> None:
        if n_classes < 1 or width < 1:
            raise ValueError(f"a score memo needs n_classes >= 1 and width >= 1, got {n_classes} and {width}")
        self.n_classes, self.width = n_classes, width
        self.rows: dict[bytes, Tensor] = {}  # key -> [n_classes, width] float32, NaN = not scored

    def clear(self) -> None:
        """Forget everything (the parameters behind every class may have changed)."""
        self.rows.clear()

    def forget(self, classes: Sequence[int]) -> None:
        """Forget these classes' scores (their parameters changed), keep the others'."""
        cols = [int(c) for c in classes]
        if cols:
            for row in self.rows.values():
                row[cols] = float("nan")

    def table(self, keys: Sequence[bytes]) -> Tensor:
        """[B, n_classes, width]: a copy of the rows of ``keys``, NaN where nothing is remembered."""
        blank = torch.full((self.n_classes, self.width), float("nan"))
        if not keys:
            return blank[None].expand(0, -1, -1).clone()
        return torch.stack([self.rows.get(k, blank) for k in keys])

    def remember(self, keys: Sequence[bytes], table_BNW: Tensor) -> None:
        """Store rows [B, n_classes, width] for ``keys`` (what :meth:`table` returned, filled in)."""
        if tuple(table_BNW.shape) != (len(keys), self.n_classes, self.width):
            raise ValueError(f"rows of shape {tuple(table_BNW.shape)} for {len(keys)} keys; expected "
                             f"[{len(keys)}, {self.n_classes}, {self.width}]")
        for k, row in zip(keys, table_BNW.to("cpu", torch.float32)):
            self.rows[k] = row.clone()

    def scores(self, keys: Sequence[bytes], classes: Sequence[int],
               compute: Callable[[Tensor, list[int]], Tensor]) -> Tensor:
        """[B, len(classes), width] scores of ``classes`` for ``keys``. What is missing comes from
        ``compute(rows_b, some_classes)`` -> [len(rows_b), len(some_classes), width], called once
        with the rows that miss any class and every class that any of them misses."""
        classes = [int(c) for c in classes]
        table_BNW = self.table(keys)
        missing_BC = table_BNW[:, classes].isnan().any(-1)
        if missing_BC.any():
            need_b = missing_BC.any(1).nonzero().squeeze(1)
            need = [c for j, c in enumerate(classes) if bool(missing_BC[:, j].any())]
            part = table_BNW[need_b]
            part[:, need] = compute(need_b, need).to("cpu", torch.float32).reshape(len(need_b), len(need), self.width)
            table_BNW[need_b] = part
            self.remember([keys[b] for b in need_b.tolist()], part)
        return table_BNW[:, classes]

    def state(self) -> dict[str, Tensor]:
        """Tensors only: keys [N, DIGEST_BYTES] uint8, rows [N, n_classes, width] float32."""
        keys = list(self.rows)
        packed = torch.tensor(list(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), DIGEST_BYTES)
        rows = torch.stack([self.rows[k] for k in keys]) if keys else torch.zeros(0, self.n_classes, self.width)
        return {"digests": packed, "rows": rows}

    def load(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state` saved (a table of [N, n_classes] rows is read as width 1)."""
        packed, rows = state["digests"], state["rows"]
        if rows.dim() == 2:
            rows = rows[:, :, None]
        if (rows.dim() != 3 or tuple(rows.shape[1:]) != (self.n_classes, self.width) or len(packed) != len(rows)
                or (len(packed) and packed.shape[1] != DIGEST_BYTES)):
            raise ValueError(f"a memo of {len(packed)} keys and rows {tuple(rows.shape)} does not fit "
                             f"{self.n_classes} classes of width {self.width}")
        self.rows = {bytes(d.tolist()): r.clone() for d, r in zip(packed, rows)}
