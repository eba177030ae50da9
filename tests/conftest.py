"""Shared fixtures: real storage emulator, real signing key and certs endpoint, the app.

Chain: emulator -> bucket -> settings -> app -> client, as in Flask's tutorial. Nothing
Google runs is patched: the storage client talks to fake-gcs-server, and tokens are real
RS256 JWTs checked by the production verifier against a local certs endpoint.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from hypothesis import settings as hypothesis_settings
from werkzeug.test import TestResponse

from receiver.config import Settings
from receiver.dev.keys import DevSigner
from receiver.dev.tools import StorageEmulator
from receiver.runtime import Runtime
from receiver.web import create_app
from tests.faultproxy import FaultProxy
from tests.helpers import AUDIENCE, push_body, receiver_environ
from tests.stubserver import Reply, Request, StubServer

# Property tests: a few hundred examples in `make test`, thousands in `make fuzz`.
hypothesis_settings.register_profile("default", max_examples=300, deadline=None)
hypothesis_settings.register_profile("long", max_examples=5000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def emulator() -> Iterator[StorageEmulator]:
    server = StorageEmulator().start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    yield server
    server.stop()
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture(scope="session")
def gcs(emulator: StorageEmulator) -> storage.Client:
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.url},
    )


@pytest.fixture
def bucket(gcs: storage.Client) -> storage.Bucket:
    """A fresh, empty bucket for each test."""
    return gcs.create_bucket(f"models-{secrets.token_hex(6)}")


class CertsEndpoint:
    """A local stand-in for https://www.googleapis.com/oauth2/v1/certs that counts fetches."""

    def __init__(self, certs_path: Path) -> None:
        self.certs_path = certs_path
        self.fetches = 0
        self.failing = False
        self.max_age = 3600
        self.server = StubServer({"GET": self._get})
        self.url = f"{self.server.url}/oauth2/v1/certs"

    def _get(self, request: Request) -> Reply:
        self.fetches += 1
        if self.failing:
            return Reply(500)
        headers = {
            "Content-Type": "application/json",
            "Cache-Control": f"public, max-age={self.max_age}",
        }
        return Reply(200, self.certs_path.read_bytes(), headers)

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="session")
def tf_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SavedModels made by real TensorFlow (tests/tfcheck.py `_EXPORTS`), once per run."""
    from tests import tfcheck

    return tfcheck.export_test_models(tmp_path_factory.mktemp("tf-exports"))


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> DevSigner:
    return DevSigner.create(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def certs_endpoint(signer: DevSigner) -> Iterator[CertsEndpoint]:
    endpoint = CertsEndpoint(signer.certs_path)
    yield endpoint
    endpoint.close()


@pytest.fixture
def token(signer: DevSigner) -> Callable[..., str]:
    """Mint a real signed push token; keyword arguments override claims."""

    def mint(**claims: Any) -> str:
        return signer.mint(claims.pop("aud", AUDIENCE), **claims)

    return mint


@pytest.fixture
def environ(
    tmp_path: Path, bucket: storage.Bucket, certs_endpoint: CertsEndpoint
) -> dict[str, str]:
    return receiver_environ(bucket.name, tmp_path, certs_endpoint.url)


@pytest.fixture
def settings(environ: dict[str, str]) -> Settings:
    return Settings.from_env(environ)


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def runtime(app: Flask) -> Runtime:
    rt: Runtime = app.extensions["receiver"]
    return rt


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def push(client: FlaskClient, token: Callable[..., str]) -> Callable[..., TestResponse]:
    """POST a correctly signed push for `blob`, as Pub/Sub would."""

    def send(blob: storage.Blob, **kwargs: str) -> TestResponse:
        return client.post(
            "/",
            data=push_body(blob, **kwargs),
            headers={"Authorization": f"Bearer {token()}"},
            content_type="application/json",
        )

    return send


@pytest.fixture
def fault_proxy(emulator: StorageEmulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(emulator.url)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_app(
    environ: dict[str, str], fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Flask:
    """An app whose storage traffic goes through the fault proxy; retries without delay."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    return create_app(
        Settings.from_env({**environ, "RECEIVER_RETRY_DELAY": "0", "RECEIVER_READ_TIMEOUT": "1"})
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real-process tests (tests/e2e/, the benchmarks' smoke tests, the image, Makefile and
    set-up script checks) and those that run TensorFlow are `slow`: `pytest -m "not slow"`
    is the inner loop; `make test` runs everything."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if (
            "e2e" in item.path.parts
            or item.path.name in SLOW_FILES
            or "tf_exports" in fixtures
            or "tfserving" in fixtures
        ):
            item.add_marker(pytest.mark.slow)


SLOW_FILES = {"test_benchmarks.py", "test_deploy.py", "test_packaging.py", "test_makefile.py"}


@pytest.fixture
def proxied(proxied_app: Flask) -> tuple[Runtime, FlaskClient]:
    """The fault-proxied app's runtime and a test client for it."""
    return proxied_app.extensions["receiver"], proxied_app.test_client()
