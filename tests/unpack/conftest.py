from pathlib import Path

import pytest


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A staging dir inside `tmp_path/outer`; tests check `outer` for anything escaping."""
    outer = tmp_path / "outer"
    (outer / "staging").mkdir(parents=True)
    return outer / "staging"
