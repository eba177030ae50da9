"""The command line's progress bar, as a terminal shows it."""

from __future__ import annotations

import io

import pytest

from receiver.terminal import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every update in the same instant, as a small file's are."""
    monkeypatch.setattr("receiver.terminal.time.monotonic", lambda: 1000.0)


def shown(screen: Terminal) -> str:
    """The bar's line as it reads last: what follows the last clear-line."""
    return screen.getvalue().rsplit("\r\x1b[K", 1)[-1]


def test_a_transfer_over_in_an_instant_ends_at_100_percent(frozen_clock):
    screen = Terminal()
    bar = ProgressBar(None, screen, verb="uploaded")
    bar.update_of(0, 2048)
    bar.update_of(2048, 2048)
    bar.close()
    assert shown(screen).startswith(f"[{'#' * 30}] uploaded 2.0 KiB of 2.0 KiB (100%), ")


def test_updates_in_between_are_drawn_at_most_five_times_a_second(frozen_clock):
    screen = Terminal()
    bar = ProgressBar(1000, screen)
    for done in range(0, 1000, 10):
        bar.update(done)
    assert screen.getvalue().count("\r\x1b[K") == 1  # the first only: the rest came too soon
    assert "(0%)" in screen.getvalue()


def test_nothing_is_drawn_where_there_is_no_terminal():
    stream = io.StringIO()
    bar = ProgressBar(10, stream)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == ""


def test_the_end_is_drawn_once_however_often_it_is_reported(frozen_clock):
    screen = Terminal()
    bar = ProgressBar(100, screen)
    for done in (0, 100, 100, 100):
        bar.update(done)
    assert screen.getvalue().count("(100%)") == 1
