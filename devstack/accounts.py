"""The unprivileged account local services run as when we are root (PostgreSQL refuses root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

SERVICE_ACCOUNT = "gateway-dev"


def service_account() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in (SERVICE_ACCOUNT, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        if name == SERVICE_ACCOUNT and shutil.which("useradd"):
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                check=False, capture_output=True,
            )  # fmt: skip
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
    return None


def traversable(path: Path, account: pwd.struct_passwd) -> bool:
    """Can `account` reach `path` (x permission on every existing ancestor)?"""
    for directory in [path, *path.parents]:
        if not directory.exists():
            continue
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True
