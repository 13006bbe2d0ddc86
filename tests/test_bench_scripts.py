"""What every bench/ script keeps to (issue 32, item 6): the package's Ray set-up rather than its own copy of the
Ray environment. Fast: the scripts are read, not run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py"))


def test_there_are_scripts_to_check() -> None:
    assert len(SCRIPTS) >= 14 and BENCH / "bench_peers.py" in SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_ray_is_set_up_by_the_package(path: Path) -> None:
    text = path.read_text()
    # sparsearch._ray.connect_ray starts or joins Ray; set_ray_env / RAY_ENV hold its environment
    assert not re.search(r"\bray\.init\(", text), f"{path.name}: use sparsearch._ray.connect_ray"
    for key in ("RAY_USAGE_STATS_ENABLED", "RAY_enable_metrics_collection", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                "RAY_AUTH_MODE"):
        assert key not in text, f"{path.name} spells {key}: use sparsearch._ray.set_ray_env"


def test_private_ray_env_adds_the_token_setting_and_user_values_win(monkeypatch) -> None:
    from sparsearch._ray import PRIVATE_RAY_ENV, RAY_ENV, set_ray_env

    for key in {**RAY_ENV, **PRIVATE_RAY_ENV}:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's value is kept
    set_ray_env()
    assert "RAY_AUTH_MODE" not in os.environ and os.environ["RAY_enable_metrics_collection"] == "0"
    set_ray_env(private=True)
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
