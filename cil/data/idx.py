"""The IDX file format of MNIST-style datasets: read (plain or gzip) and write.

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the
number of dimensions, then one big-endian uint32 per dimension, then the values, big-endian,
in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cil.errors import UserError
from varc.atomic import atomic_write_bytes

# IDX type code -> big-endian numpy dtype
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_TO_CODE: dict[str, int] = {dt.newbyteorder("=").str[1:]: code for code, dt in _CODE_TO_DTYPE.items()}


def decode_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file into a native-endian array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODE_TO_DTYPE:
        raise UserError(f"{name} is not an IDX file (bad header); expected MNIST-style IDX data")
    dtype = _CODE_TO_DTYPE[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{name} is truncated: its IDX header is incomplete; fetch the file again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise UserError(f"{name} has {len(data)} bytes but its IDX header {shape} needs {expected}; "
                        "fetch the file again")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of an uncompressed IDX file holding ``array``."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in _DTYPE_TO_CODE:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if array.ndim > 255:
        raise ValueError("IDX holds at most 255 dimensions")
    code = _DTYPE_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file, gunzipping when the name ends in .gz."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e}; fetch the file again") from e


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a native-endian numpy array."""
    return decode_idx(read_idx_bytes(path), name=str(path))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz), atomically."""
    data = encode_idx(array)
    if Path(path).suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(Path(path), data)
