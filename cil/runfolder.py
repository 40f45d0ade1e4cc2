"""A run folder's guards: one writer at a time (a lock file), no temporary files left behind,
and file-system failures reported as one line.

The lock is a small JSON file, ``<run folder>/.lock``, naming the owner's pid, host and
command. A second ``cil run`` on the same folder stops with an error naming the owner; a
lock whose process has died (same host, pid gone or reused) is stale and is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from cil.errors import UserError, os_error

LOCK_FILE = ".lock"
TEMP_SUFFIX = ".tmp"  # every temporary file the suite writes ends so (results and model writers)


def prepare(out_dir: Path) -> Path:
    """Create the run folder, or say in one line why it cannot be one."""
    out_dir = Path(out_dir)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir} is a file, not a folder; choose another --out")
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path=out_dir) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out_dir}: permission denied; choose a writable --out")
    return out_dir


def _lock_candidate_pid(path: Path) -> int | None:
    """The pid in a lock candidate's name (``.lock.<pid>.<id>.tmp``, ``.lock.stale.<pid>.tmp``)."""
    parts = path.name.split(".")
    for part in parts[2:4]:
        if part.isdigit():
            return int(part)
    return None


def sweep_temp_files(out_dir: Path) -> list[Path]:
    """Remove temporary files left by a killed run (only call while holding the lock).

    A lock candidate of a process still alive is left alone: another ``cil run`` may be
    between writing it and trying to link it as the lock."""
    removed = []
    for path in Path(out_dir).rglob(f"*{TEMP_SUFFIX}"):
        if path.parent == Path(out_dir) and path.name.startswith(f"{LOCK_FILE}."):
            pid = _lock_candidate_pid(path)
            if pid is not None and _alive({"pid": pid}):
                continue
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    started = owner.get("start_time")
    return started is None or _start_time(pid) in (None, started)


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock for the block."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self.held = False

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid()),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
        try:
            tmp.write_text(json.dumps(me) + "\n")
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails when a lock exists, never half-written
                    self.held = True
                    return
                except FileExistsError:
                    owner = self._owner()
                    if owner is None:
                        continue  # released meanwhile
                    if owner.get("host") == me["host"] and not _alive(owner):
                        self._take_over(owner)
                        continue
                    raise UserError(self._busy_message(owner)) from None
            raise UserError(self._busy_message(self._owner() or {}))
        except OSError as exc:
            raise os_error(exc, path=self.path) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: dict) -> None:
        """Move the stale lock aside atomically (one taker wins) and delete it."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}{TEMP_SUFFIX}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if moved != stale and isinstance(moved, dict) and _alive(moved):
            try:  # a live owner's lock was moved by mistake: put it back
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def _busy_message(self, owner: dict) -> str:
        who = (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {owner.get('started', '?')}: "
               f"{owner.get('command', '?')}")
        return (f"run folder {self.path.parent} is in use by another cil run ({who}); wait for it to finish or "
                f"choose another --out (if that run is gone, delete {self.path})")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
