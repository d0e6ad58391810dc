"""The open-file limit of a server process: each connection (an event stream lasts as long as its job), asset
file and database handle takes a descriptor, and the usual soft limit of 1024 is soon met by a busy server,
which then stops accepting connections. The soft limit is raised to the hard one, as Go does."""

from __future__ import annotations

import resource

#: Enough for thousands of concurrent connections; a hard limit of "unlimited" is not taken literally.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files towards its hard limit; returns the limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # a sandbox that refuses: keep what there is
            return soft
        return wanted
    return soft
