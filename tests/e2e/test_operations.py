"""What an operator sees of a real receiver: metrics, JSON logs, progress, CLI, status page."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import curl_push, wait_for
from tests.helpers import HALF_PLUS_TWO, PROJECT_ROOT, push_body, same_files, upload_model

ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def scrape(url):
    samples = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_add_up_across_gunicorn_workers(gunicorn, bucket, token, tmp_path):
    gunicorn.start()
    for _ in range(12):  # spread over both worker processes
        assert curl_push(gunicorn.url, "forged", b"{}", tmp_path)[0] == 401
    assert (
        curl_push(gunicorn.url, token(), push_body(upload_model(bucket, 123)), tmp_path)[0] == 202
    )
    wait_for(lambda: gunicorn.status()["jobs"]["installed"] == 1, what="the install")
    for _ in range(6):  # whichever process answers, the totals are the same
        samples = scrape(gunicorn.url)
        assert samples[("receiver_auth_failures_total", (("reason", "malformed_token"),))] == 12
        assert (
            samples[("receiver_pushes_total", (("format", "pubsub-push"), ("outcome", "queued")))]
            == 1
        )
        assert samples[("receiver_jobs_finished_total", (("state", "installed"),))] == 1
        assert samples[("receiver_install_duration_seconds_count", ())] == 1
        assert samples[("receiver_installed_version", (("model", "half_plus_two"),))] == 123


def test_every_log_line_is_json_with_job_and_trace_fields(gunicorn, bucket, token, tmp_path):
    gunicorn.env["RECEIVER_LOG_FORMAT"] = "json"
    gunicorn.start()
    trace = "105445aa7843bc8bf206b12000100000"
    body = push_body(upload_model(bucket, 123))
    headers = {"X-Cloud-Trace-Context": f"{trace}/1;o=1"}
    assert curl_push(gunicorn.url, token(), body, tmp_path, headers)[0] == 202
    curl_push(gunicorn.url, "forged", b"{}", tmp_path)
    wait_for(lambda: gunicorn.status()["jobs"]["installed"] == 1, what="the install")
    gunicorn.stop(signal.SIGTERM)

    lines = gunicorn.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses, gunicorn's too
    assert len(entries) > 10
    assert all({"severity", "message", "time"} <= entry.keys() for entry in entries)
    installed = next(e for e in entries if "installed half_plus_two version 123" in e["message"])
    assert (installed["model"], installed["version"]) == ("half_plus_two", 123)
    assert installed["object"] == "models/half_plus_two/123.tar.gz"
    assert isinstance(installed["generation"], int)
    push_line = next(e for e in entries if e["message"].startswith("push models/half_plus_two"))
    assert push_line["logging.googleapis.com/trace"] == trace
    assert not any(e["logger"] == "gunicorn.access" for e in entries)  # off unless asked
    assert any(e["severity"] == "WARNING" and "401" in e["message"] for e in entries)


def test_the_access_log_comes_when_asked_for_in_the_same_format(gunicorn):
    gunicorn.env["RECEIVER_LOG_FORMAT"] = "json"
    gunicorn.env["GUNICORN_CMD_ARGS"] = "--access-logfile -"
    gunicorn.start()
    assert requests.get(f"{gunicorn.url}/healthz", timeout=10).status_code == 200
    gunicorn.stop(signal.SIGTERM)
    entries = [json.loads(line) for line in gunicorn.log().splitlines()]
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert any('"GET /healthz HTTP/1.1" 200' in e["message"] for e in access)


def test_a_long_download_shows_its_progress(
    gunicorn, fault_proxy, bucket, token, tmp_path, settings
):
    model = tmp_path / "big_model"
    shutil.copytree(HALF_PLUS_TWO, model)
    size = 16 * 2**20
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(size))
    fault_proxy.throttle = size / 8  # about 8 seconds
    gunicorn.env["STORAGE_EMULATOR_HOST"] = fault_proxy.url
    gunicorn.start()
    assert (
        curl_push(
            gunicorn.url, token(), push_body(upload_model(bucket, 5, source=model)), tmp_path
        )[0]
        == 202
    )

    def running_progress():
        job = gunicorn.status()["recent_jobs"][0]
        progress = job["progress"]
        return (
            progress if job["state"] == "running" and progress and progress["bytes_done"] else None
        )

    wait_for(running_progress, what="progress in /status")
    progress = running_progress() or {}
    assert 0 < progress.get("percent", 0) < 100
    assert progress["bytes_per_second"] > 0 and progress["eta_seconds"] is not None
    page = requests.get(f"{gunicorn.url}/", timeout=10).text
    # A bar and a rate, whichever unit the rate reads in (below 1 MiB/s: KiB/s).
    assert "<progress" in page and re.search(r"\d (KiB|MiB)/s", page), page
    wait_for(lambda: (settings.model_dir / "half_plus_two" / "5").exists(), what="the install")
    assert "downloaded" in gunicorn.log() and "left" in gunicorn.log()


def run_cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli_env(environ, emulator):
    return {**environ, "STORAGE_EMULATOR_HOST": emulator.url, "RECEIVER_LOG_FORMAT": "text"}


def test_cli_install_then_status(cli_env, bucket, settings):
    upload_model(bucket, 7)
    installed = run_cli("install", f"gs://{bucket.name}/models/half_plus_two/7.tar.gz", env=cli_env)
    assert installed.returncode == 0, installed.stderr
    assert "installed half_plus_two version 7" in installed.stdout
    assert same_files(settings.model_dir / "half_plus_two" / "7")
    # status reads the model dir and the journal only: no bucket, no storage to reach.
    status = run_cli("status", env={**cli_env, "RECEIVER_SOURCE": "", "STORAGE_EMULATOR_HOST": ""})
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "TF", "SERVING", "DETAIL"]
    assert lines[1].split() == ["half_plus_two", "7", "unconfirmed"]
    assert any(line.split()[:4] == ["1", "installed", "half_plus_two", "7"] for line in lines)
    retry = run_cli("retry", "1", env=cli_env)
    assert retry.returncode == 2
    assert retry.stderr.startswith("receiver: job 1 is installed, not failed: nothing to retry")


def test_commands_that_verify_no_token_need_no_audience(cli_env, bucket):
    """status, sync, install and retry never check a push token: no auth settings asked."""
    env = {
        key: value
        for key, value in cli_env.items()
        if key not in ("RECEIVER_AUDIENCE", "RECEIVER_ALLOWED_SENDERS")
    }
    for command in (["sync"], ["status"]):  # status reads what sync made: it creates nothing
        result = run_cli(*command, env=env)
        assert result.returncode == 0, result.stderr


def test_cli_push_reaches_a_running_receiver(gunicorn, cli_env, bucket, settings, signer):
    gunicorn.start()
    upload_model(bucket, 8)
    pushed = run_cli(
        "push",
        f"gs://{bucket.name}/models/half_plus_two/8.tar.gz",
        "--url", f"{gunicorn.url}/",
        "--audience", cli_env["RECEIVER_AUDIENCE"],
        "--keys", str(signer.certs_path.parent),
        env=cli_env,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith("202 ")
    wait_for(lambda: (settings.model_dir / "half_plus_two" / "8").exists(), what="the install")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["install", "not-a-url"], "cli_env", "'not-a-url' is not gs://BUCKET/OBJECT"),
        (["sync"], {}, "RECEIVER_SOURCE is required: gs://BUCKET/PREFIX the models are"),
        (["retry", "999"], "cli_env", "no job 999"),
        (
            ["sync"],
            {"RECEIVER_SOURCE": "gs://models/m", "RECEIVER_MODEL_DIR": "/proc/m"},
            "RECEIVER_MODEL_DIR is /proc/m: it does not exist",
        ),
        (
            ["status"],
            {"RECEIVER_SOURCE": "gs://models/m", "RECEIVER_MODEL_DIR": "/proc/m"},
            "RECEIVER_MODEL_DIR is /proc/m: no such directory",
        ),
        # No emulator and no Google credentials: one line, not a traceback.
        (
            ["push", "gs://b/models/m/1.tar.gz"],
            {
                "STORAGE_EMULATOR_HOST": "",
                "HOME": "/nonexistent",
                "GOOGLE_APPLICATION_CREDENTIALS": "",
            },
            "Your default credentials were not found",
        ),
    ],
)
def test_cli_errors_are_one_line(args, env, message, request):
    result = run_cli(*args, env=request.getfixturevalue(env) if isinstance(env, str) else env)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert result.stderr.startswith(f"receiver: {message}")


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_status_page_in_headless_chromium(gunicorn, bucket, token, tmp_path):
    gunicorn.start()
    assert (
        curl_push(gunicorn.url, token(), push_body(upload_model(bucket, 123)), tmp_path)[0] == 202
    )
    wait_for(lambda: gunicorn.status()["jobs"]["installed"] == 1, what="the install")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    browser = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", f"{gunicorn.url}/"], capture_output=True, text=True, timeout=120
    ).stdout
    assert '<tr data-model="half_plus_two" data-version="123"><td>half_plus_two</td>' in dom
    assert "installed" in dom and "Ready" in dom
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", "--window-size=1200,900", f"{gunicorn.url}/"],
        capture_output=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` gives no terminal")
def test_cli_install_draws_a_progress_bar_on_a_terminal(cli_env, bucket, settings):
    upload_model(bucket, 9)
    command = (
        f"{sys.executable} -m receiver install gs://{bucket.name}/models/half_plus_two/9.tar.gz"
    )
    # `script` runs the command on a pseudo-terminal, as a person at a shell would.
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
    assert "[" in result.stdout and "#" in result.stdout and "iB/s" in result.stdout  # KiB, MiB
    assert "(100%)" in result.stdout  # a sub-second install's bar ends full, not where it began
    assert "installed half_plus_two version 9" in result.stdout
    # A sub-second install shows no made-up estimate of the time left...
    assert "left" not in result.stdout
    # ...and no log line is written onto the bar's line.
    assert "job 1:" in result.stdout
    for segment in re.split(r"[\r\n]", result.stdout):
        assert not ("iB/s" in segment and "job 1:" in segment), repr(segment)


def test_status_reads_only_and_needs_no_storage(cli_env, tmp_path):
    typo = tmp_path / "modles"
    env = {**cli_env, "RECEIVER_MODEL_DIR": str(typo), "STORAGE_EMULATOR_HOST": ""}
    status = run_cli("status", env=env)
    assert status.returncode == 2
    assert status.stderr.strip() == (
        f"receiver: RECEIVER_MODEL_DIR is {typo}: no such directory "
        "(is it the receiver's model dir?)"
    )
    assert not typo.exists(), "a read-only command created the directory"


def test_sync_of_an_empty_prefix_says_it_holds_nothing_not_that_all_is_installed(cli_env, bucket):
    synced = run_cli("sync", env=cli_env)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.strip() == (
        f"nothing to install: gs://{bucket.name}/models/ holds no model versions (nothing "
        "published yet, or RECEIVER_SOURCE names the wrong prefix)"
    )
