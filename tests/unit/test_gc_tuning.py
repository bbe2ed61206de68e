"""The services' garbage-collector settings (ops/gc_tuning.py)."""

from __future__ import annotations

import subprocess
import sys

from ops.gc_tuning import YOUNG_THRESHOLD


def test_tuning_raises_the_young_threshold_and_freezes_start_up_objects() -> None:
    # In a fresh interpreter: freezing is process-wide and not undone here.
    code = (
        "import gc; from ops.gc_tuning import tune_for_service; "
        "before = gc.get_threshold(); tune_for_service(); "
        "after = gc.get_threshold(); "
        "print(before[1:] == after[1:], after[0], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", str(YOUNG_THRESHOLD), "True"]


def test_every_service_command_applies_it() -> None:
    from ops import cli

    source = cli._process.__code__.co_consts  # the nested command's code object
    names = {n for c in source if hasattr(c, "co_names") for n in c.co_names}
    assert "tune_for_service" in names
