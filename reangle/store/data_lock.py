"""One embedded server per data folder: a second would re-queue the first one's running job as interrupted
and run it beside it. The lock is the system's (flock): a killed server leaves nothing to clean up. An older
reangle took no lock: `check_no_unlocked_server` finds one still running by its heartbeat."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import IO

from reangle.errors import InvalidInput

LOCK_FILE = "server.lock"
#: A heartbeat this recent (a server beats every 2 s) is a server that still runs, if its process does.
RECENT_BEAT_S = 10.0


def unwritable(data_dir: Path, exc: OSError) -> InvalidInput:
    """The one-line refusal of a data folder this process cannot write in (a read-only file system, missing
    permissions)."""
    return InvalidInput(
        f"cannot write in the data folder {data_dir}: {exc.strerror or exc}", field="data-dir"
    )


def check_writable(data_dir: Path, *files: Path) -> None:
    """InvalidInput (`unwritable`) unless this process can make a file in `data_dir` and write each of
    `files` that exists."""
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
        for file in files:
            if file.exists():
                file.open("r+b").close()
    except OSError as exc:
        raise unwritable(data_dir, exc) from None


class DataFolderLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Raises InvalidInput naming the holder's pid when another process holds the folder."""
        try:
            handle = self.path.open("a+")
        except OSError as exc:
            raise unwritable(self.path.parent, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise _running(holder, self.path.parent) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None


def check_no_unlocked_server(database: Path, data_dir: Path) -> None:
    """InvalidInput when a live process of this machine, other than this one, beat in the SQLite file
    `database` of `data_dir` within RECENT_BEAT_S: a server that took no lock (an older reangle) runs on it.
    Call it with the lock held, so that any server taking one is known not to run, and before the store
    opens: opening would bring the tables to this version's under the running server. The file is only
    read (and a missing one, or one without beats, is no server)."""
    if not database.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
            names = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM workers WHERE seen_at >= ?", (time.time() - RECENT_BEAT_S,)
                )
            ]
    except sqlite3.Error:  # no workers table yet, or a file the store will say more about
        return
    host = socket.gethostname()
    for name in names:
        name_host, _, pid = str(name).rpartition(":")
        if name_host == host and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            raise _running(pid, data_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _running(pid: str, data_dir: Path) -> InvalidInput:
    return InvalidInput(
        f"another reangle server (pid {pid}) is running on the data folder {data_dir}: "
        "stop it, or give this one its own --data-dir",
        field="data-dir",
    )
