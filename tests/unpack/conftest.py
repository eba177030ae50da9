from pathlib import Path

import pytest


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A staging dir inside `tmp_path/outer`, named as the installer names one (a zip that
    is spooled goes beside it); tests check `outer` for anything escaping."""
    staging = tmp_path / "outer" / ".staging-1-job1-test"
    staging.mkdir(parents=True)
    return staging
