"""Datasets as in-memory uint8 arrays, one loader module per source, found by name.

    from cil.data import load_dataset
    ds = load_dataset("digits")          # ImageDataset
    ds = load_dataset("npz:/path/my.npz")

Loaders never touch the network at load time; a dataset that is not on the machine raises
``UserError`` with a one-line hint on how to get it (``cil data fetch NAME``).
"""

from cil.data.base import ImageDataset, available_datasets, data_root, load_dataset, register_dataset

__all__ = ["ImageDataset", "available_datasets", "data_root", "load_dataset", "register_dataset"]
