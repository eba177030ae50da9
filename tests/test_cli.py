"""`receiver COMMAND --help`: every command has it, and it shows each default a user
would otherwise guess (the commands themselves: tests/e2e/test_operations.py)."""

import subprocess
import sys

import pytest

from tests.helpers import PROJECT_ROOT

COMMANDS = ["install", "publish", "sync", "status", "retry", "token", "push", "demo", "dev"]


def help_of(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", command, "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = help_of(command)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: receiver {command}")


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("token", ["(default: .demo/keys)", "(default: 3600)"]),
        ("push", ["(default: http://127.0.0.1:8080/push)", "(default: .demo/keys)"]),
        ("publish", ["(default: tar.zst: as small as tar.gz, and zstd unpacks", "no suffix"]),
    ],
)
def test_the_help_shows_each_default(command, defaults):
    shown = " ".join(help_of(command).stdout.split())  # unwrapped
    for default in defaults:
        assert default in shown, shown


@pytest.mark.parametrize("lifetime", ["0", "-5"])
def test_a_token_that_would_be_born_expired_is_refused(lifetime):
    made = subprocess.run(
        [sys.executable, "-m", "receiver", "token", "--audience", "x", "--lifetime", lifetime],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 2 and made.stdout == "", made
    assert f"argument --lifetime: {lifetime} is not a positive number of seconds" in made.stderr
