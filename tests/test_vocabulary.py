"""The delivery contract (docs/delivery-contract.md) names every push outcome the code can
answer, and no other."""

from __future__ import annotations

import re

from receiver.vocabulary import PushOutcome
from tests.helpers import PROJECT_ROOT


def test_the_delivery_contract_table_lists_exactly_the_push_outcomes():
    page = (PROJECT_ROOT / "docs" / "delivery-contract.md").read_text()
    table = page[page.index("# Delivery contract") : page.index("## Acknowledgement")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    # Each row opens with its outcome(s): `queued`: …, `duplicate` (…) or `ignored` (…)
    named = {m for row in rows for m in re.findall(r"`([a-z_]+)`(?=[ :(])", row.split("|")[1])}
    assert named == {outcome.value for outcome in PushOutcome}
