"""srkit.utils.memory.tune_allocator: the process set-up the `srkit` command applies before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "SRKIT_ALLOCATOR_TUNING")}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


PROBE = ("import os, sys; from srkit.utils.memory import tune_allocator; "
         "print(tune_allocator(), tune_allocator(), os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)")


def test_sets_huge_pages_once_without_importing_torch():
    applied, again, thp, torch_loaded = _run(PROBE).split()
    assert applied == ("True" if sys.platform.startswith("linux") else "False")
    assert again == "False"  # second call is a no-op
    assert thp == "1" and torch_loaded == "False"


def test_user_settings_win():
    assert _run(PROBE, THP_MEM_ALLOC_ENABLE="0").split()[2] == "0"
    applied, _, thp, _ = _run(PROBE, SRKIT_ALLOCATOR_TUNING="0").split()
    assert applied == "False" and thp == "None"


def test_cli_tunes_before_torch_is_imported():
    code = ("import sys, os; import srkit.cli as c; assert 'torch' not in sys.modules; "
            "c.main(['models']); print(os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    assert _run(code).splitlines()[-1] == "1"
