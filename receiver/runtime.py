"""Builds the receiver's collaborators from `Settings` and holds them together.

The web app, the gunicorn hooks and the CLI all start from `Runtime.create(settings)`,
so each piece is built one way only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from receiver import servable
from receiver.auth import PushVerifier
from receiver.certs import CertsCache
from receiver.config import ServerSettings, Settings
from receiver.download import ObjectStore
from receiver.errors import ConfigError
from receiver.installer import Installer
from receiver.journal import Journal
from receiver.modelconfig import update_model_config
from receiver.quarantine import Quarantine
from receiver.readiness import FIRST_SYNC_KEY
from receiver.relay import Relay
from receiver.status import AUTH_OFF_WARNING
from receiver.sync import Syncer
from receiver.versions import Versions
from receiver.worker import RetryPolicy, Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    journal: Journal
    verifier: PushVerifier | None  # None: auth explicitly switched off
    store: ObjectStore
    installer: Installer
    worker: Worker
    quarantine: Quarantine
    # False once gunicorn starts shutting this process down (set by gunicorn.conf.py).
    serving: Callable[[], bool] = lambda: True
    relay: Relay | None = None  # RECEIVER_PEERS set: pushes are forwarded to the peers

    @classmethod
    def create(cls, settings: Settings, store: ObjectStore | None = None) -> Runtime:
        """`store`: a Cloud Storage client the caller made (route tests pass one that
        reaches no bucket); without it, one from the environment's credentials."""
        settings.model_dir.mkdir(parents=True, exist_ok=True)
        journal = open_journal(settings)
        if store is None:
            store = ObjectStore.from_environment(settings.read_timeout, settings.slicing)
        installer = Installer(settings, store, Versions(journal), journal)
        verifier = None
        if settings.auth_enabled:
            verifier = PushVerifier(
                CertsCache(settings.certs_url), settings.audience, settings.allowed_senders
            )
        return cls(
            settings=settings,
            journal=journal,
            verifier=verifier,
            store=store,
            installer=installer,
            worker=Worker(
                journal,
                installer,
                RetryPolicy(settings.max_attempts, settings.retry_delay),
                Syncer(settings, store, journal),
                retention_days=settings.job_retention_days,
            ),
            quarantine=Quarantine(settings.state_dir / "quarantine"),
            relay=_relay(settings),
        )


def _relay(settings: Settings) -> Relay | None:
    if settings.peers is None:
        return None
    # Our own port tells a peer URL that is ourselves (receiver/peers.py).
    return Relay(settings.peers, ServerSettings.from_env(os.environ).port)


def open_journal(settings: Settings) -> Journal:
    """The journal every process of this receiver shares, its tables created if new."""
    journal = Journal(settings.state_dir / "journal.sqlite3")
    journal.initialize()
    return journal


def existing_journal(settings: Settings) -> Journal:
    """The journal of a receiver that has run, for commands that only read (`status`):
    nothing is created, migrated or asked of Cloud Storage."""
    if not settings.model_dir.is_dir():
        raise ConfigError(
            f"RECEIVER_MODEL_DIR is {settings.model_dir}: no such directory "
            "(is it the receiver's model dir?)"
        )
    path = settings.state_dir / "journal.sqlite3"
    if not path.is_file():
        raise ConfigError(
            f"no journal at {path}: no receiver has run with this RECEIVER_MODEL_DIR "
            "(or RECEIVER_STATE_DIR)"
        )
    return Journal(path)


STATE_LOCK = "receiver.lock"  # in the state dir; says who holds it
_WAIT_NOTICE_SECONDS = 30.0
_held: dict[Path, IO[str]] = {}  # open for the life of the process: closing would unlock


def hold_state_dir(settings: Settings) -> None:
    """Lock the state dir for this process's life, waiting while another receiver holds it.

    A second receiver on the same state dir (a RollingUpdate on a ReadWriteMany volume)
    would take the first one's staging for crash debris and delete it, and queue its
    running jobs again. So it waits here, before it cleans up or serves, and says why.
    Workers forked from the holder share its lock (flock); it ends with the last of them.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / STATE_LOCK
    if path in _held:
        return
    lock = path.open("a+")
    noticed = None
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if noticed is None or time.monotonic() - noticed >= _WAIT_NOTICE_SECONDS:
                lock.seek(0)
                holder = lock.read().strip() or "another receiver"
                log.warning(
                    "waiting for the state dir %s: %s holds %s; two receivers on one state "
                    "dir would delete each other's installs. This one starts when that one stops",
                    settings.state_dir,
                    holder,
                    path,
                )
                noticed = time.monotonic()
            time.sleep(0.5)
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    _held[path] = lock


def prepare_host(settings: Settings) -> None:
    """Once per start, before any worker runs: the state dir's lock, directories, journal,
    and crash clean-up."""
    hold_state_dir(settings)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    journal = open_journal(settings)
    for path in servable.remove_debris(settings.model_dir):
        log.warning("removed debris of an interrupted install: %s", path)
    journal.set_meta(FIRST_SYNC_KEY, None)  # readiness waits for this start's first sync
    resumed = journal.release_running()
    if resumed:
        log.warning("%s interrupted job(s) queued again", resumed)
    if settings.model_config_file is not None:
        update_model_config(settings.model_config_file, settings.model_dir)
    if not settings.auth_enabled:
        log.warning(AUTH_OFF_WARNING)
        if settings.peers is not None:  # what anyone sends reaches every replica
            log.warning(
                "and every push is relayed to the peers (RECEIVER_PEERS=%s)", settings.peers
            )
