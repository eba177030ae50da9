"""The development commands of `receiver`: `token`, `push`, `demo` and `dev emulator`.

They use the local stand-ins for Google in receiver/dev/, which the production image
leaves out (receiver/cli.py adds these commands only where this package exists), and
import them only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import requests
from google.cloud import storage

from receiver.download import ObjectStore
from receiver.errors import ReceiverError
from receiver.objectref import bucket_name_problem, split_gs_url
from receiver.variables import RECEIVER, SERVER

DEFAULT_DEMO_DIR = Path(".demo")


def _positive_seconds(value: str) -> int:
    # 0 or less would mint a token already expired, yet accepted within the 60 s skew.
    seconds = int(value)
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of seconds")
    return seconds


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="print a signed dev token for curl")
    token.add_argument("--audience", required=True, help="must equal RECEIVER_AUDIENCE")
    _dev_key_options(token)
    token.add_argument(
        "--lifetime",
        type=_positive_seconds,
        default=3600,
        help="seconds until it expires, at least 1 (default: %(default)s)",
    )
    token.set_defaults(run=_token)

    push = commands.add_parser("push", help="send a signed push for an object to a receiver")
    push.add_argument(
        "object", help="gs://BUCKET/NAME (looked up in Cloud Storage or the emulator)"
    )
    push.add_argument(
        "--url",
        default="http://127.0.0.1:8080/push",
        help="the receiver's push URL (default: %(default)s)",
    )
    push.add_argument("--audience", help="token audience (default: $RECEIVER_AUDIENCE, else --url)")
    push.add_argument(
        "--event", default="OBJECT_FINALIZE", help="eventType attribute (default: %(default)s)"
    )
    push.add_argument(
        "--body-only",
        action="store_true",
        help="print the body Pub/Sub would POST (for curl's --data-binary @FILE); send nothing",
    )
    _dev_key_options(push)
    push.set_defaults(run=_push)

    demo = commands.add_parser("demo", help="run the whole path locally (emulator, receiver, push)")
    # A string default goes through `type` too: a bad PORT is argparse's one-line error.
    demo.add_argument("--port", type=int, default=SERVER["port"].raw(os.environ))
    demo.add_argument("--dir", type=Path, default=DEFAULT_DEMO_DIR, help="where demo state lives")
    demo.add_argument("--once", action="store_true", help="stop once the model is installed")
    demo.set_defaults(run=_demo)

    dev = commands.add_parser("dev", help="local stand-ins for Google, for running it yourself")
    tools = dev.add_subparsers(required=True, metavar="TOOL")
    emulator = tools.add_parser(
        "emulator",
        help="run the storage emulator with a bucket in the foreground; prints its exports",
    )
    emulator.add_argument(
        "--bucket", required=True, type=_bucket_name, help="the bucket to create in it"
    )
    emulator.add_argument("--port", type=int, help="default: a free port")
    emulator.set_defaults(run=_emulator)


def _dev_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", help="sender (RECEIVER_ALLOWED_SENDERS; default: the dev key's)")
    parser.add_argument(
        "--keys",
        type=Path,
        default=DEFAULT_DEMO_DIR / "keys",
        help="dev key directory, made if missing; its certs.json is RECEIVER_CERTS_URL "
        "(default: %(default)s)",
    )


def _bucket_name(value: str) -> str:
    """The bucket rule RECEIVER_SOURCE is held to: the emulator would take any name."""
    if problem := bucket_name_problem(value):
        raise argparse.ArgumentTypeError(problem)
    return value


def _token(args: argparse.Namespace) -> int:
    from receiver.dev.keys import DevSigner

    signer = DevSigner.create(args.keys)
    print(signer.mint(args.audience, email=args.email, lifetime_seconds=args.lifetime))
    return 0


def _push(args: argparse.Namespace) -> int:
    from receiver.dev.keys import DevSigner
    from receiver.dev.tools import notification_push

    bucket, name = split_gs_url(args.object)
    client = ObjectStore.from_environment().client
    blob = storage.Bucket(client, bucket).get_blob(name)
    if blob is None:
        raise ReceiverError(f"{args.object} does not exist")
    body = notification_push(blob, event_type=args.event)
    if args.body_only:
        print(json.dumps(body))
        return 0
    audience = args.audience or RECEIVER["audience"].read(os.environ) or args.url
    token = DevSigner.create(args.keys).mint(audience, email=args.email)
    response = requests.post(
        args.url,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )
    print(f"{response.status_code} {response.text.strip()}")
    return 0 if response.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from receiver.dev.demo import run_demo

    return run_demo(args.port, args.dir.resolve(), args.once)


def _emulator(args: argparse.Namespace) -> int:
    from receiver.dev.emulator import run_emulator

    return run_emulator(args.bucket, args.port)
