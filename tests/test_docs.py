"""The pages hold together and say what the code does: every relative link in README.md
and docs/ leads to a file, and the troubleshooting table quotes each push-token refusal
exactly as the receiver prints it, and no refusal the receiver cannot print; its missing
setting and storage listing rows, too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.api_core import exceptions as google_exceptions

from receiver.auth import PushVerifier
from receiver.certs import CertsCache
from receiver.config import Settings
from receiver.dev.keys import DEV_SENDER
from receiver.dev.tools import free_port
from receiver.download.store import listing_error
from receiver.errors import ConfigError, DeliveryError
from receiver.vocabulary import PushOutcome
from tests.helpers import AUDIENCE, PROJECT_ROOT
from tests.tokenfaults import TOKEN_FAULTS

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
TROUBLESHOOTING = PROJECT_ROOT / "docs" / "troubleshooting.md"
USER_PAGES = ("running-it-yourself", "publishing", "configuration", "delivery-contract",
              "operating", "troubleshooting", "deploying", "safety", "decisions",
              "dependencies")  # fmt: skip
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The #fragments GitHub gives the page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_leads_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists() or (
                fragment and linked.suffix == ".md" and fragment not in anchors(linked)
            ):
                broken.append(f"{page.relative_to(PROJECT_ROOT)}: {target}")
    assert broken == []


def quoted_token_refusals() -> dict[str, re.Pattern[str]]:
    """The reasons the table quotes in its 401, 403 and 503 rows, `…` standing for anything."""
    outcomes = {outcome.value for outcome in PushOutcome}
    quoted = {}
    for row in TROUBLESHOOTING.read_text().splitlines():
        if re.match(r"\| (401|403|503) ", row):
            for text in re.findall(r"`([^`]+)`", row.split("|")[1]):
                if text not in outcomes:
                    quoted[text] = re.compile(".+".join(map(re.escape, text.split("…"))))
    return quoted


def refusal(verifier: PushVerifier, header: str | None) -> str:
    try:
        verifier.verify(header)
    except DeliveryError as error:
        return error.reason
    raise AssertionError(f"{header!r} was accepted")


def test_the_troubleshooting_table_quotes_every_token_refusal_as_printed(
    certs_endpoint, token, signer, tmp_path
):
    verifier = PushVerifier(CertsCache(certs_endpoint.url), AUDIENCE, frozenset({DEV_SENDER}))
    printed = [refusal(verifier, fault.header(token, signer)) for fault in TOKEN_FAULTS.values()]
    for certs_url in (f"http://127.0.0.1:{free_port()}/certs", (tmp_path / "none.json").as_uri()):
        without_certs = PushVerifier(CertsCache(certs_url), AUDIENCE, frozenset({DEV_SENDER}))
        printed.append(refusal(without_certs, f"Bearer {token()}"))

    quoted = quoted_token_refusals()
    unlisted = [r for r in printed if not any(q.fullmatch(r) for q in quoted.values())]
    assert unlisted == [], f"add these to {TROUBLESHOOTING.name}"
    never_printed = [t for t, q in quoted.items() if not any(q.fullmatch(r) for r in printed)]
    assert never_printed == [], "the receiver prints none of these"


def quoted_reasons() -> list[re.Pattern[str]]:
    """Every text the table's first column quotes, `…` standing for anything."""
    rows = [row for row in TROUBLESHOOTING.read_text().splitlines() if row.startswith("| ")]
    return [
        re.compile(".+".join(map(re.escape, text.split("…"))))
        for row in rows
        for text in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]


def test_the_troubleshooting_table_quotes_settings_and_storage_errors_as_printed():
    printed = []
    for environ in ({}, {"RECEIVER_SOURCE": "gs://models"}):
        with pytest.raises(ConfigError) as missing:
            Settings.from_env(environ)
        printed.append(str(missing.value))
    for answer in (google_exceptions.NotFound, google_exceptions.Forbidden):
        printed.append(str(listing_error(answer("GET https://…: said"), "models", "prod/")))
    quoted = quoted_reasons()
    assert [r for r in printed if not any(q.fullmatch(r) for q in quoted)] == []


def test_the_readme_is_one_screen_that_links_the_pages_a_user_looks_for():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 60  # one screen, read to the end
    linked = set(_LINK.findall(readme))
    for page in USER_PAGES:
        assert f"docs/{page}.md" in linked, page
