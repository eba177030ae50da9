"""The receiver as deployed: gunicorn with 2 workers, pushes sent with curl."""

import os
import shutil
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import curl_push, wait_for
from tests.helpers import HALF_PLUS_TWO, push_body, same_files, upload_model


def test_a_push_installs_the_model(gunicorn, bucket, token, settings, tmp_path):
    gunicorn.start()
    secret = token()
    status, answer = curl_push(gunicorn.url, secret, push_body(upload_model(bucket, 123)), tmp_path)
    assert (status, answer["outcome"]) == (202, "queued")
    saved_model = settings.model_dir / "half_plus_two" / "123" / "saved_model.pb"
    wait_for(saved_model.exists, what="saved_model.pb")
    assert saved_model.read_bytes() == (HALF_PLUS_TWO / "saved_model.pb").read_bytes()
    assert same_files(saved_model.parent)
    wait_for(lambda: gunicorn.status()["recent_jobs"][0]["state"] == "installed")
    assert gunicorn.status()["models"] == {"half_plus_two": [123]}
    assert secret.split(".")[2] not in gunicorn.log()  # tokens are never logged


def test_concurrent_duplicate_pushes_install_once(
    gunicorn, fault_proxy, bucket, token, settings, tmp_path
):
    gunicorn.env["STORAGE_EMULATOR_HOST"] = fault_proxy.url  # to count downloads
    gunicorn.start()
    blob = upload_model(bucket, 123)
    bodies = [push_body(blob, message_id=str(n)) for n in range(20)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda b: curl_push(gunicorn.url, token(), b, tmp_path), bodies))
    assert all(status in (200, 202) for status, _ in answers)
    assert [status for status, _ in answers].count(202) == 1
    assert len({answer["job"] for _, answer in answers}) == 1
    wait_for(lambda: gunicorn.status()["jobs"]["installed"] == 1, what="the install")
    status = gunicorn.status()
    assert sum(status["jobs"].values()) == 1
    assert gunicorn.log().count("installed half_plus_two version 123") == 1
    assert fault_proxy.downloads == 1


def complete(version_dir, expected):
    """Does `version_dir` hold every expected file at its full size?"""
    for relative, size in expected.items():
        try:
            if (version_dir / relative).stat().st_size != size:
                return False
        except FileNotFoundError:
            return False
    return True


def test_tf_serving_never_sees_a_partial_version(gunicorn, bucket, token, settings, tmp_path):
    # A model big enough that unpacking takes a while: the fixture plus 96 MiB of weights.
    model = tmp_path / "big_model"
    shutil.copytree(HALF_PLUS_TWO, model)
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(96 * 2**20))
    expected = {
        str(p.relative_to(model)): p.stat().st_size for p in model.rglob("*") if p.is_file()
    }
    model_root = settings.model_dir / "half_plus_two"
    model_root.mkdir(parents=True)
    gunicorn.start()

    seen_partial, polls, done = [], [0], threading.Event()

    def poll_like_tf_serving():
        while not done.is_set():
            polls[0] += 1
            for entry in os.listdir(model_root):
                if entry.isdigit() and not complete(model_root / entry, expected):
                    seen_partial.append(entry)
            done.wait(0.001)

    poller = threading.Thread(target=poll_like_tf_serving)
    poller.start()
    try:
        blob = upload_model(bucket, 123, source=model)
        assert curl_push(gunicorn.url, token(), push_body(blob), tmp_path)[0] == 202
        wait_for(lambda: (model_root / "123").exists(), what="the install")
    finally:
        done.set()
        poller.join()
    assert seen_partial == []
    assert polls[0] > 10
    assert complete(model_root / "123", expected)


def test_start_up_removes_staging_debris(gunicorn, settings):
    model_root = settings.model_dir / "half_plus_two"
    shutil.copytree(HALF_PLUS_TWO, model_root / "5")
    (model_root / ".staging-6-0123abcd").mkdir()
    (model_root / ".staging-6-0123abcd" / "saved_model.pb").write_bytes(b"half")
    gunicorn.start()
    assert sorted(os.listdir(model_root)) == ["5"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RECEIVER_KEEP_VERSIONS", "lots", "RECEIVER_KEEP_VERSIONS has value 'lots': not a whole"),
        ("PORT", "http", "PORT has value 'http': not a whole number"),
        ("PORT", "70000", "PORT has value 70000: must be at most 65535"),
        ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY has value '0': must be at least 1"),
        ("GUNICORN_THREADS", "many", "GUNICORN_THREADS has value 'many': not a whole number"),
        ("GUNICORN_TIMEOUT", "1.5", "GUNICORN_TIMEOUT has value '1.5': not a whole number"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "-1", "GUNICORN_GRACEFUL_TIMEOUT has value '-1'"),
        ("GUNICORN_LOG_LEVEL", "loud", "GUNICORN_LOG_LEVEL has value 'loud': must be one of"),
        ("RECEIVER_MODEL_DIR", "/proc/models", "it does not exist and cannot be created"),
        ("RECEIVER_MODEL_DIR", "/etc/hostname", "RECEIVER_MODEL_DIR is /etc/hostname: not a dir"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_clear_line(gunicorn, variable, value, message):
    gunicorn.env[variable] = value
    gunicorn.env["RECEIVER_LOG_FORMAT"] = "text"  # where the logger's name is printed
    if variable == "RECEIVER_MODEL_DIR":
        gunicorn.env.pop("RECEIVER_STATE_DIR", None)
    gunicorn.start(wait=False)
    assert gunicorn.process.wait(timeout=60) == 2
    log = gunicorn.log()
    assert message in log
    assert "Traceback" not in log
    assert sum(line.count("configuration error") for line in log.splitlines()) == 1
    assert "receiver: receiver:" not in log


def test_unauthenticated_pushes_are_refused_by_the_real_server(gunicorn, bucket, tmp_path):
    gunicorn.start()
    status, answer = curl_push(
        gunicorn.url, "not-a-token", push_body(upload_model(bucket, 1)), tmp_path
    )
    assert (status, answer["outcome"]) == (401, "unauthenticated")
    assert gunicorn.status()["recent_jobs"] == []


def test_sigterm_shuts_down_cleanly(gunicorn):
    gunicorn.start()
    gunicorn.stop(signal.SIGTERM)
    assert gunicorn.process.returncode == 0
    assert "stopped" in gunicorn.log()
