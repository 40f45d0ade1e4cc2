"""Errors that mean "the user asked for something wrong", as opposed to bugs."""


class UserError(Exception):
    """Bad input (unknown name, wrong type, missing data ...).

    The command line prints the message as one line, prefixed with ``error:``, and exits
    with status 2. Messages say what was wrong and what would be right.
    """


class DiskFullError(UserError):
    """No space left where a file was being written: nothing later in the run could succeed."""


def os_error(exc: OSError, *, path: object = None, size: int | None = None) -> UserError:
    """A file-system failure as one line that says what went wrong where, and what would help.

    ``size`` is the number of bytes that were being written, where known (disk full)."""
    import errno
    import shutil
    from pathlib import Path

    where = Path(str(path if path is not None else exc.filename or "?"))
    if exc.errno == errno.ENOSPC:
        free = ""
        for folder in (where, *where.parents):
            try:
                free = f", {shutil.disk_usage(folder).free / 2**20:.1f} MB free there"
                break
            except OSError:
                continue
        need = f"{size / 2**20:.1f} MB needed" if size is not None else "no space left"
        return DiskFullError(f"disk full: cannot write {where} ({need}{free}); free some space or choose another --out")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return UserError(f"cannot write {where}: {why}; choose a writable --out")
    if exc.errno == errno.ENAMETOOLONG:
        return UserError(f"path too long ({len(str(where))} characters, a name of {max(map(len, where.parts))}): "
                         f"{str(where)[:80]}...; choose a shorter --out")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return UserError(f"{where}: a part of this path is a file, not a folder; choose another --out")
    return UserError(f"{where}: {exc.strerror or exc}")
