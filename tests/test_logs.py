import json
import logging
import sys

from receiver.logs import JsonFormatter, TextFormatter, log_context, trace_fields


def record(message="job %s: installed", *args, level=logging.INFO):
    return logging.LogRecord("receiver.worker", level, __file__, 1, message, args or (7,), None)


def test_json_lines_carry_cloud_logging_fields_and_the_job(monkeypatch):
    with log_context(
        job=7, model="half_plus_two", version=123, object="m/123.tar.gz", generation=9
    ):
        line = JsonFormatter().format(record())
    entry = json.loads(line)
    assert entry["severity"] == "INFO"
    assert entry["message"] == "job 7: installed"
    assert entry["time"].endswith("+00:00")
    assert (entry["model"], entry["version"], entry["object"], entry["generation"]) == (
        "half_plus_two",
        123,
        "m/123.tar.gz",
        9,
    )


def test_context_ends_with_its_block():
    with log_context(model="a"):
        pass
    assert "model" not in json.loads(JsonFormatter().format(record()))


def test_exceptions_stay_on_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(failing)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["message"]
    assert json.loads(line)["severity"] == "ERROR"


def test_cloud_trace_header(monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    trace = "105445aa7843bc8bf206b12000100000"
    fields = trace_fields({"X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    assert fields == {
        "logging.googleapis.com/trace": f"projects/my-project/traces/{trace}",
        "logging.googleapis.com/spanId": "1",
    }


def test_w3c_traceparent(monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    fields = trace_fields(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )
    assert fields["logging.googleapis.com/trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_no_trace_header_no_trace_field():
    assert trace_fields({"X-Cloud-Trace-Context": "garbage"}) == {}


def test_text_lines_are_readable_and_carry_the_context():
    with log_context(model="half_plus_two", version=123):
        line = TextFormatter().format(record())
    assert "INFO" in line and "job 7: installed" in line
    assert line.endswith("[model=half_plus_two version=123]")
