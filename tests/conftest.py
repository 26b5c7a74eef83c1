"""Shared fixtures: the tiny miniworld, built once per test session.

Set ``ANATOMY_TEST_WORLD=DIR`` to reuse an already built tiny world (local development);
CI builds it fresh (about a minute on 2 cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    reuse = os.environ.get("ANATOMY_TEST_WORLD")
    if reuse and (Path(reuse) / "truth.json").is_file():
        return Path(reuse)
    from anatomy.world.build import build_world
    from anatomy.world.presets import get_preset

    out = tmp_path_factory.mktemp("worlds") / "tiny"
    build_world(get_preset("tiny"), out, seed=TINY_SEED)
    return out


@pytest.fixture(scope="session")
def tiny_truth(tiny_world) -> dict:
    from anatomy.io import read_json

    return read_json(tiny_world / "truth.json")


def first_target(world: Path) -> tuple[int, str]:
    """The world's first target checkpoint T1: ``(step, revision)`` (``step200-tokens205K``
    on the tiny preset)."""
    from anatomy.io import read_json

    c = read_json(Path(world) / "truth.json")["checkpoints"][0]
    return c["step"], c["revision"]
