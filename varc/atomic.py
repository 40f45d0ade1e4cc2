"""Atomic file writes: the one implementation the whole project uses (``cil`` wraps it to
report file-system failures in one line).

The bytes go to a temporary file beside the target, named ``.<name>.<pid>.<random>.tmp``,
which is flushed to disk and then renamed over the target, so readers see the old file or the
new one, never half of one. The file gets the usual permissions (0666 minus the umask). On any
failure the temporary file is removed; one left by a killed process ends in ``.tmp``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:  # "x" honours the umask, unlike mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
