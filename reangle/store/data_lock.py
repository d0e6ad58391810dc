"""One embedded server per data folder: a second would re-queue the first one's running job as interrupted
and run it beside it. The lock is the system's (flock): a killed server leaves nothing to clean up."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from reangle.errors import InvalidInput

LOCK_FILE = "server.lock"


class DataFolderLock:
    """Held from `acquire` until `release` or the end of the process."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Raises InvalidInput naming the holder's pid when another process holds the folder."""
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InvalidInput(
                f"another reangle server (pid {holder}) is running on the data folder {self.path.parent}: "
                "stop it, or give this one its own --data-dir",
                field="data-dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None
