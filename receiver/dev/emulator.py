"""`receiver dev emulator --bucket B`: the storage emulator in the foreground, for running
the receiver yourself against it.

It starts fake-gcs-server (the binary `make install` puts in `.venv`), creates the bucket
(the emulator starts with none), prints the `export` line the receiver and the CLI need,
and runs until Ctrl-C, SIGTERM or SIGHUP, with or without a terminal (it never reads
stdin). Stopping it stops the emulator; if it is killed outright, the kernel stops the
emulator too (`StorageEmulator(die_with_parent=True)`). Everything it prints that is not
a command starts with `# `, so all of it can be pasted into a shell.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from receiver.dev.tools import StorageEmulator

_STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    """A stopping signal arrived."""


def run_emulator(bucket: str, port: int | None) -> int:
    emulator = StorageEmulator(port=port, die_with_parent=True)
    try:
        for stopping in _STOPPING:
            signal.signal(stopping, _raise_stop)
        emulator.start()
        client = storage.Client(
            project="emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator.url},
        )
        client.create_bucket(bucket)
        print(
            f"# fake-gcs-server at {emulator.url}, in memory, with the bucket gs://{bucket}.\n"
            "# In each shell that runs the receiver or `receiver publish|push|sync|install`:\n"
            f"export STORAGE_EMULATOR_HOST={emulator.url}\n"
            "# Ctrl-C (or SIGTERM) stops it; it keeps nothing.",
            flush=True,
        )
        code = emulator.wait()
        print(f"receiver: fake-gcs-server exited with {code}", file=sys.stderr)
        return 1
    except _Stop:
        return 0
    finally:
        for stopping in _STOPPING:  # a second Ctrl-C must not cut the stop short
            signal.signal(stopping, signal.SIG_IGN)
        emulator.stop()


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)
