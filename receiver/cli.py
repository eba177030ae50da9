"""`python -m receiver <command>` (or `receiver <command>` when installed as a package).

Commands that act on the receiver's state (install, sync, status, retry) read the same
environment as the server; `token`, `push`, `demo` and `dev emulator` are local development
helpers, defined in receiver/dev/cli.py.
Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import google.auth.exceptions
import requests
from google.api_core import exceptions as google_exceptions

from receiver.config import Settings, check_model_dir
from receiver.download import ObjectStore
from receiver.errors import ReceiverError
from receiver.layout import Ignored, parse_object_name, reserved_names
from receiver.logs import configure_logging
from receiver.objectref import ObjectRef, split_gs_url
from receiver.publish import DEFAULT_FORMAT, PACK_FORMATS, publish
from receiver.readiness import models_without_a_version
from receiver.runtime import Runtime, existing_journal
from receiver.savedmodel import parse_tags
from receiver.status import job_dict, job_line, text_report
from receiver.sync import sync, versions_by_model
from receiver.terminal import ProgressBar
from receiver.variables import RECEIVER
from receiver.vocabulary import JobState

_EXPECTED_ERRORS = (
    ReceiverError,
    OSError,
    requests.RequestException,
    google_exceptions.GoogleAPICallError,
    google.auth.exceptions.GoogleAuthError,
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except _EXPECTED_ERRORS as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    install = commands.add_parser("install", help="install one object now, with a progress bar")
    install.add_argument("object", help="gs://BUCKET/PREFIX/<model>/<version>.<ext>")
    install.add_argument("--generation", type=int, help="default: the object's live generation")
    install.set_defaults(run=_install)

    publish = commands.add_parser(
        "publish",
        help="check a SavedModel export as the receiver will, pack it and upload it",
    )
    publish.add_argument("export", type=Path, help="the SavedModel directory (saved_model.pb)")
    publish.add_argument(
        "destination",
        help="gs://BUCKET/PREFIX/MODEL/VERSION, no suffix: publish writes VERSION.FORMAT",
    )
    publish.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        choices=PACK_FORMATS,
        help="the archive's format (default: %(default)s: as small as tar.gz, and zstd "
        "unpacks faster than gzip, so it installs quickest; docs/benchmarks.md)",
    )
    publish.add_argument(
        "--as-directory",
        action="store_true",
        help="no archive: upload each file under VERSION/, then the done marker last "
        "(what TFX's Pusher writes)",
    )
    publish.add_argument(
        "--tags",
        default=RECEIVER["saved_model_tags"].raw(os.environ),
        help="the tag set TF Serving loads (default: $RECEIVER_SAVED_MODEL_TAGS or "
        f"{RECEIVER['saved_model_tags'].default})",
    )
    publish.add_argument(
        "--done-marker",
        default=RECEIVER["done_marker"].raw(os.environ),
        help="with --as-directory (default: $RECEIVER_DONE_MARKER or "
        f"{RECEIVER['done_marker'].default})",
    )
    publish.set_defaults(run=_publish)

    sync_command = commands.add_parser(
        "sync", help="install the bucket's newest versions once, then exit (an init step)"
    )
    sync_command.add_argument(
        "--json", action="store_true", help="print each job as /status does, one JSON per line"
    )
    sync_command.set_defaults(run=_sync)

    status = commands.add_parser("status", help="models, versions and recent jobs, as a table")
    status.add_argument("--jobs", type=int, default=15, help="how many recent jobs to list")
    status.set_defaults(run=_status)

    retry = commands.add_parser("retry", help="run a failed job again")
    retry.add_argument("job", type=int)
    retry.set_defaults(run=_retry)

    _add_dev_commands(commands)
    return parser


def _add_dev_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """token, push, demo and dev: present in a checkout, absent from the production image
    (which leaves receiver/dev/ out)."""
    try:
        from receiver.dev.cli import add_commands
    except ImportError:
        return
    add_commands(commands)


def _runtime() -> Runtime:
    """The receiver's parts, for commands that never verify a push token."""
    settings = Settings.from_env(os.environ, verifies_pushes=False)
    check_model_dir(settings)
    configure_logging(settings.log_format)
    return Runtime.create(settings)


def _publish(args: argparse.Namespace) -> int:
    bar = ProgressBar(None, sys.stderr, verb="uploaded")
    written = publish(
        args.export,
        args.destination,
        tags=parse_tags(args.tags),
        archive_format=args.format,
        as_directory=args.as_directory,
        done_marker=args.done_marker,
        progress=bar.update_of,
    )
    bar.close()
    what = f"{len(written) - 1} files, then {written[-1]}" if args.as_directory else written[0]
    print(f"published {what}")
    return 0


def _generation(runtime: Runtime, bucket: str, name: str, generation: int) -> ObjectRef | None:
    """That generation as the bucket has it: its own size and checksums, not the live one's."""
    blob = runtime.store.client.bucket(bucket).get_blob(name, generation=generation)
    if blob is None:
        return None
    return ObjectRef(
        bucket=bucket,
        name=name,
        generation=int(blob.generation),
        size=blob.size,
        md5=blob.md5_hash,
        crc32c=blob.crc32c,
    )


def _install(args: argparse.Namespace) -> int:
    runtime = _runtime()
    bucket, name = split_gs_url(args.object)
    settings = runtime.settings
    target = parse_object_name(
        name, settings.prefix, settings.done_marker, reserved_names(settings)
    )
    if isinstance(target, Ignored):
        raise ReceiverError(f"{args.object}: {target.reason}")
    if args.generation:
        event = _generation(runtime, bucket, name, args.generation)
    else:
        event = next(
            (e for e in runtime.store.list_objects(bucket, name) if e.name == name),
            None,
        )
    if event is None:
        what = f" generation {args.generation}" if args.generation else ""
        raise ReceiverError(f"{args.object}{what} does not exist")
    job, _ = runtime.journal.enqueue(event, target)
    claimed = runtime.journal.claim(
        runtime.worker.owner, runtime.worker.lease_seconds, job_id=job.id
    )
    if claimed is None:
        print(f"job {job.id} is already {job.state.value}: {job.reason or ''}".rstrip(": "))
        return 0 if job.state is JobState.INSTALLED else 1
    bar = ProgressBar(claimed.size, sys.stderr)
    runtime.worker.run_job(claimed, on_progress=bar.update)
    bar.close()
    done = runtime.journal.get(job.id) or claimed
    if done.state is JobState.INSTALLED:
        print(f"installed {done.model} version {done.version} in {runtime.settings.model_dir}")
        return 0
    print(f"receiver: job {done.id} {done.state.value}: {done.reason}", file=sys.stderr)
    return 1


def _sync(args: argparse.Namespace) -> int:
    """Sync and install until nothing new is queued (a broken newest version falls back);
    exit 0 when every model in the bucket has a version installed."""
    runtime = _runtime()
    seen: dict[int, None] = {}
    while True:
        jobs = [
            j for j in sync(runtime.settings, runtime.store, runtime.journal) if j.id not in seen
        ]
        if not jobs:
            break
        seen.update(dict.fromkeys(job.id for job in jobs))
        pending = {job.id for job in jobs}
        while pending:
            if not runtime.worker.run_once():
                time.sleep(0.2)  # a retry is waiting for its backoff
            pending = {i for i in pending if not _final(runtime, i)}
    for job_id in seen:
        job = runtime.journal.get(job_id)
        if job is not None:
            print(json.dumps(job_dict(job)) if args.json else job_line(job))
    dark = models_without_a_version(runtime.settings, runtime.journal)
    if dark:
        print(f"receiver: {dark}", file=sys.stderr)
    elif not seen:
        print(_nothing_to_install(runtime.settings, runtime.store))
    return 1 if dark else 0


def _nothing_to_install(settings: Settings, store: ObjectStore) -> str:
    """What a sync that queued nothing found: the bucket's models, counted there."""
    listing = store.list_objects(settings.bucket, settings.prefix)
    models = versions_by_model(listing, settings.prefix, settings.done_marker, {})
    if not models:
        return (
            f"nothing to install: {settings.source} holds no model versions "
            "(nothing published yet, or RECEIVER_SOURCE names the wrong prefix)"
        )
    return (
        f"nothing to install: every model in {settings.source} has its newest version "
        f"installed ({len(models)} model{'s' * (len(models) != 1)})"
    )


def _final(runtime: Runtime, job_id: int) -> bool:
    job = runtime.journal.get(job_id)
    return job is None or job.state.final


def _status(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ, verifies_pushes=False, reads_storage=False)
    print(text_report(settings, existing_journal(settings), args.jobs), end="")
    return 0


def _retry(args: argparse.Namespace) -> int:
    runtime = _runtime()
    job = runtime.journal.get(args.job)
    if job is None:
        raise ReceiverError(f"no job {args.job}")
    if job.state not in (JobState.FAILED, JobState.SKIPPED):
        raise ReceiverError(
            f"job {job.id} is {job.state.value}, not failed: nothing to retry"
            + (
                " (versions are immutable: publish a new version number)"
                if job.state is JobState.INSTALLED
                else ""
            )
        )
    requeued = runtime.journal.requeue(job.id)
    assert requeued is not None
    print(
        f"job {job.id} queued again: {job.model} version {job.version} from {job.source}; "
        "a running receiver picks it up",
        file=sys.stderr,
    )
    print(json.dumps(job_dict(requeued)))
    return 0
