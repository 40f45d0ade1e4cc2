"""Per-class parameter sets, each its own tensors, apart from the shared trunk.

A class's head holds its embedding (start token and AdaLN condition) and, depending on the
configured capacity, adapters on every trunk linear layer:

- ``embedding``: the embedding only;
- ``lora:<r>``: rank-r adapters W + B_c A_c (Hu et al. 2021, "LoRA"), B_c initialised to zero;
- ``full``:     a full-rank delta W + D_c, initialised to zero, i.e. a per-class copy of the
  trunk fine-tuned from it.

Heads live in a ModuleDict keyed ``"null"`` (the null class, label ``NULL_CLASS``), ``"0"``,
``"1"``, ... Keeping each class's tensors separate (never rows of one shared table) means an
optimizer given only some classes' parameters cannot move any other class, not even through
weight decay or leftover optimizer moments.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from varc.config import parse_head
from varc.transformer import Adapters

NULL_CLASS = -1  # the label of the unconditional ("null") class


def head_key(c: int) -> str:
    return "null" if int(c) == NULL_CLASS else str(int(c))


class ClassHead(nn.Module):
    """One class's own parameters."""

    def __init__(self, width: int, shapes: dict[str, tuple[int, int]], kind: str, rank: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(width, generator=generator) * math.sqrt(1 / width / 3))
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        self.delta = nn.ParameterDict()
        for key, (fin, fout) in shapes.items():
            if kind == "lora":
                self.lora_a[key] = nn.Parameter(torch.randn(rank, fin, generator=generator) / math.sqrt(fin))
                self.lora_b[key] = nn.Parameter(torch.zeros(fout, rank))
            elif kind == "full":
                self.delta[key] = nn.Parameter(torch.zeros(fout, fin))


class ClassHeads(nn.Module):
    """All per-class heads, and the glue that turns a batch of labels into trunk conditioning."""

    def __init__(self, width: int, shapes: dict[str, tuple[int, int]], head: str) -> None:
        super().__init__()
        self.width = width
        self.shapes = dict(shapes)
        self.kind, self.rank = parse_head(head)
        self.sets = nn.ModuleDict()  # the owner adds the null class first

    # --- bookkeeping ----------------------------------------------------------------------------
    @property
    def classes(self) -> list[int]:
        """Class ids with a head, ascending (the null class excluded)."""
        return sorted(int(k) for k in self.sets if k != "null")

    def __contains__(self, c: int) -> bool:
        return head_key(c) in self.sets

    def head(self, c: int) -> ClassHead:
        key = head_key(c)
        if key not in self.sets:
            raise ValueError(f"class {int(c)} has no parameters yet; call add_classes([{int(c)}]) first")
        return self.sets[key]

    def add(self, class_ids: Iterable[int], init: str = "random", generator: torch.Generator | None = None) -> list[int]:
        """Create heads for classes not seen before; returns the ids that were new.

        ``init="random"`` draws a fresh embedding; ``init="null"`` starts the class as an exact copy
        of the null class's head (the unconditional model of what the trunk has seen), so a class
        added to a frozen trunk starts from p(x) rather than from noise.
        """
        if init not in ("random", "null"):
            raise ValueError(f"init {init!r}: use 'random' or 'null'")
        added = []
        for c in class_ids:
            c = int(c)
            if c < 0 and c != NULL_CLASS:
                raise ValueError(f"class ids must be >= 0 (or NULL_CLASS = -1), got {c}")
            if c in self:
                continue
            ref = next(iter(self.sets.values()), None)
            h = ClassHead(self.width, self.shapes, self.kind, self.rank, generator=generator)
            if ref is not None:
                h.to(device=ref.embedding.device, dtype=ref.embedding.dtype)
            if init == "null" and c != NULL_CLASS and "null" in self.sets:
                h.load_state_dict(self.sets["null"].state_dict())
            self.sets[head_key(c)] = h
            added.append(c)
        return added

    def parameters_of(self, class_ids: Iterable[int]) -> list[nn.Parameter]:
        return [p for c in class_ids for p in self.head(c).parameters()]

    # --- conditioning ---------------------------------------------------------------------------
    def condition(self, labels_B: Tensor) -> tuple[Tensor, Adapters]:
        """Per-sample condition [B, D] and LoRA adapters for a batch of (possibly mixed) labels."""
        uniq, inv_B = torch.unique(labels_B, return_inverse=True)
        heads = [self.head(c) for c in uniq.tolist()]
        B, U = labels_B.shape[0], len(heads)

        def gather(ts: list[Tensor]) -> Tensor:
            # index_select, not stacked[inv_B]: the backward of advanced indexing sums each head's
            # gradient in a varying order on more than one CPU thread (runs differ in the last bits)
            stacked = torch.stack(ts)
            return stacked.expand(B, *stacked.shape[1:]) if U == 1 else stacked.index_select(0, inv_B)

        cond_BD = gather([h.embedding for h in heads])
        adapters: Adapters = {}
        if self.kind == "lora":
            for key in self.shapes:
                adapters[key] = (gather([h.lora_a[key] for h in heads]), gather([h.lora_b[key] for h in heads]))
        return cond_BD, adapters

    def weight_deltas(self, c: int) -> Adapters:
        """Class ``c``'s change to every adapted weight (B A for LoRA, D for full heads; none for
        embedding heads), to be merged into the trunk's weights for a batch of that class only."""
        h = self.head(c)
        if self.kind == "lora":
            return {key: h.lora_b[key] @ h.lora_a[key] for key in self.shapes}
        if self.kind == "full":
            return {key: h.delta[key] for key in self.shapes}
        return {}
