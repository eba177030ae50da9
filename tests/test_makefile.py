"""The Makefile's step that installs the Debian tools the tests drive, run by a user
without root (as most users are): it must pass and say what the tests will skip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT


def debian_packages() -> list[str]:
    """The packages of the Makefile's DEBIAN_TOOLS (command:package pairs)."""
    tools = re.search(r"^DEBIAN_TOOLS := (.*)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert tools, "no DEBIAN_TOOLS in the Makefile"
    return re.findall(r":(\S+)", tools[1])


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to become an unprivileged user",
)
def test_the_tool_step_as_an_unprivileged_user_passes_and_names_what_it_skips():
    # Outside pytest's own temporary directories and the checkout, which may be closed to
    # other users (both are 0700 when made by mktemp -d): a directory nobody can enter.
    work = Path(tempfile.mkdtemp(prefix="unprivileged-make-"))
    try:
        work.chmod(0o755)
        # The Makefile copied there (`tools` reads nothing else), and a PATH holding only
        # `id`: none of the tools is found, as on a machine without them.
        shutil.copy(PROJECT_ROOT / "Makefile", work / "Makefile")
        (work / "bin").mkdir(mode=0o755)
        (work / "bin" / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "/usr/bin/env", f"PATH={work / 'bin'}",
             shutil.which("make") or "make", "--no-print-directory", "-C", str(work), "tools"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: not root, so apt-get cannot install" in result.stdout, result.stdout
    assert "the tests that need them will be skipped" in result.stdout
    for package in debian_packages():
        assert f" {package}" in result.stdout, package
    assert "installing" not in result.stdout  # it never tried apt-get
