"""A data folder this process cannot write in, as on a file system remounted read-only: by its permissions
when the tests run as an ordinary user, else (root writes anywhere) by refusing this process's writes under
it with the error a read-only file system gives."""

from __future__ import annotations

import errno
import os
import pathlib
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: What `strerror` says, in the refusal's last words, on the way this process is kept from writing.
REASON = "Read-only file system" if os.geteuid() == 0 else "Permission denied"


@contextmanager
def read_only_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if os.geteuid() != 0:
        files = [(path, path.stat().st_mode) for path in [folder, *folder.iterdir()]]
        for path, mode in files:
            path.chmod(stat.S_IMODE(mode) & ~0o222)
        try:
            yield
        finally:
            for path, mode in files:
                path.chmod(stat.S_IMODE(mode))
        return

    def refused(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def under(path: Any) -> bool:
        return Path(os.fspath(path)).resolve().is_relative_to(folder.resolve())

    real_open, real_path_open = os.open, pathlib.Path.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    # tempfile and Path.touch make files with os.open, FileIO (Path.open) does not
    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & writing and under(path):
            raise refused(path)
        return real_open(path, flags, *args, **kwargs)

    def path_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if set(mode) & set("wax+") and under(self):
            raise refused(self)
        return real_path_open(self, mode, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", os_open)
        patch.setattr(pathlib.Path, "open", path_open)
        yield
