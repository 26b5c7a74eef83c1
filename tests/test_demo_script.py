"""demo.sh writes only into folders the shell has already made, so every part runs alone
from nothing (``rm -rf data/demo; bash demo.sh E``) and ``make demo`` runs on a fresh clone
(issue 20, item 7: ``tee`` opened ``contrastive/pretokenize-batch.txt`` before the script in
front of it had made the folder).

The independent check: bash itself runs each part alone, and all of them together, into an
output folder whose parents do not exist, with ``$PY`` a stub that does nothing (so makes no
folder): any redirection or ``tee`` into a folder that only a script would have made fails the
run. Offline, no world, no model, about a second.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "demo.sh"
PARTS = "ABCDE"


def test_demo_sh_parses():
    r = subprocess.run(["bash", "-n", str(DEMO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("parts", [*PARTS, PARTS])
def test_each_part_runs_alone_from_nothing(tmp_path, parts):
    """The stub python makes no folder and prints one line of placeholder facts."""
    stub = tmp_path / "py"
    stub.write_text("#!/bin/sh\necho stub 1 2 3 1,2,3,4\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "world").mkdir()
    out = tmp_path / "fresh" / "data" / "demo"
    env = {**os.environ, "PY": str(stub), "WORLD": str(tmp_path / "world"), "OUT": str(out)}
    r = subprocess.run(["bash", str(DEMO), parts], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "figures.md").is_file()
    assert all((out / f"figures_{p}.md").is_file() for p in parts)
