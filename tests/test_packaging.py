"""What the production image holds: receiver/ without receiver/dev/ (see .dockerignore)."""

import subprocess
import sys

from tests.helpers import PROJECT_ROOT

PRODUCTION_MODULES = sorted(
    ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    for path in (PROJECT_ROOT / "receiver").rglob("*.py")
    if path.stem not in ("__init__", "__main__")
    and "dev" not in path.relative_to(PROJECT_ROOT).parts
)


def test_production_code_runs_without_the_dev_package():
    """Every production module, and gunicorn's config, imports with receiver/dev/ absent."""
    script = (
        "import sys, runpy\n"
        "class NoDev:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'receiver.dev' or name.startswith('receiver.dev.'):\n"
        "            raise ImportError('receiver.dev is not in the image')\n"
        "sys.meta_path.insert(0, NoDev())\n"
        f"for module in {PRODUCTION_MODULES!r}:\n"
        "    __import__(module)\n"
        "runpy.run_path('gunicorn.conf.py')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_image_leaves_out_the_dev_package():
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "receiver/dev/" in ignored


def test_without_the_dev_package_the_cli_offers_only_the_production_commands():
    script = (
        "import sys\n"
        "class NoDev:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'receiver.dev' or name.startswith('receiver.dev.'):\n"
        "            raise ImportError('receiver.dev is not in the image')\n"
        "sys.meta_path.insert(0, NoDev())\n"
        "from receiver.cli import main\n"
        "main(['--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("COMMAND ...")[1]
    for command in ("install", "publish", "sync", "status", "retry"):
        assert f"    {command} " in commands, result.stdout
    for dev_only in ("token", "push", "demo", "dev"):
        assert f"    {dev_only} " not in commands, result.stdout
