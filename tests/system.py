"""System programs the tests drive (redis-server, haproxy): find them, or install them.

:func:`find_program` looks on PATH, then in /usr/bin, /usr/sbin and
/usr/local/bin; when the program is missing and we are root it runs
``apt-get install -y PACKAGE`` (``apt-get update`` first if that fails).
When it returns None, callers call :func:`missing`: the test is skipped on a
developer's machine, and fails under ``CI=true``, where a missing tool means
the setup is broken, not that the test does not apply.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from typing import NoReturn

import pytest

__all__ = ["find_program", "missing"]

_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def find_program(name: str, package: str, *, install: bool = True) -> str | None:
    """Path of ``name``, installing ``package`` with apt when root and allowed."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _apt_install(package)
        return find_program(name, package, install=False)
    return None


def missing(what: str) -> NoReturn:
    """Skip the test for want of a system tool; under ``CI=true``, fail it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: a missing tool fails the run)", pytrace=False)
    pytest.skip(what)
