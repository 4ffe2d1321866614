"""`make run`'s runner (scripts/run_procfile.py): Ctrl-C is a clean stop, a crash is not."""
from __future__ import annotations

import importlib.util
import sys

from config.settings import ROOT

spec = importlib.util.spec_from_file_location("run_procfile", ROOT / "scripts" / "run_procfile.py")
run_procfile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_procfile)


def test_a_stop_by_ctrl_c_ends_with_exit_0_and_a_goodbye(capsys):
    child = "import os, signal; os.kill(os.getpid(), signal.SIGINT)"   # what Ctrl-C does to honcho
    assert run_procfile.main([sys.executable, "-c", child]) == 0
    assert "Goodbye" in capsys.readouterr().out


def test_a_crash_keeps_its_exit_status(capsys):
    assert run_procfile.main([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert "Goodbye" not in capsys.readouterr().out
