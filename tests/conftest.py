"""Shared test settings: one CPU thread (tiny models run faster and steadier on 2 cores)."""

import os

os.environ.setdefault("CIL_DATA", os.path.join(os.path.expanduser("~"), ".cache", "varc-cil", "data"))

import torch  # noqa: E402

torch.set_num_threads(1)
