"""`python -m receiver <command>`: the demo, dev tokens, and job maintenance."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from receiver.config import Settings
from receiver.devkeys import DEV_SENDER, DevSigner
from receiver.errors import ReceiverError
from receiver.journal import JobState, Journal
from receiver.logs import configure_logging
from receiver.runtime import Runtime
from receiver.sync import sync

DEFAULT_DEMO_DIR = Path(".demo")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ReceiverError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole path locally (emulator, receiver, push)")
    demo.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    demo.add_argument("--dir", type=Path, default=DEFAULT_DEMO_DIR, help="where demo state lives")
    demo.add_argument("--once", action="store_true", help="stop once the model is installed")
    demo.set_defaults(run=_demo)

    token = commands.add_parser("token", help="print a signed dev token for curl")
    token.add_argument("--audience", required=True, help="must equal RECEIVER_AUDIENCE")
    token.add_argument("--email", default=DEV_SENDER, help="the sender (RECEIVER_ALLOWED_SENDERS)")
    token.add_argument("--keys", type=Path, default=DEFAULT_DEMO_DIR / "keys",
                       help="dev key directory (made if missing; holds certs.json)")  # fmt: skip
    token.add_argument("--lifetime", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=_token)

    sync = commands.add_parser(
        "sync", help="install the bucket's newest versions once, then exit (an init step)"
    )
    sync.set_defaults(run=_sync)

    retry = commands.add_parser("retry", help="run a failed job again (reads the environment)")
    retry.add_argument("job", type=int)
    retry.set_defaults(run=_retry)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from receiver.demo import run_demo

    return run_demo(args.port, args.dir.resolve(), args.once)


def _token(args: argparse.Namespace) -> int:
    signer = DevSigner.create(args.keys)
    print(signer.mint(args.audience, email=args.email, lifetime_seconds=args.lifetime))
    return 0


def _sync(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    configure_logging()
    # No crash clean-up here: a receiver may be running beside this command.
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime.create(settings)
    jobs = sync(settings, runtime.store, runtime.journal)
    pending = {job.id for job in jobs}
    while pending:
        if not runtime.worker.run_once():
            time.sleep(0.2)  # a retry is waiting for its backoff
        pending = {i for i in pending if not _final(runtime.journal, i)}
    results = [runtime.journal.get(job.id) for job in jobs]
    for job in results:
        if job is not None:
            print(json.dumps(job.to_dict()))
    failed = [job for job in results if job is not None and job.state is JobState.FAILED]
    return 1 if failed else 0


def _final(journal: Journal, job_id: int) -> bool:
    job = journal.get(job_id)
    return job is None or job.state.final


def _retry(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    journal = Journal(settings.state_dir / "journal.sqlite3")
    journal.initialize()
    job = journal.requeue(args.job)
    if job is None:
        print(f"receiver: no job {args.job}", file=sys.stderr)
        return 1
    print(json.dumps(job.to_dict()))
    return 0
