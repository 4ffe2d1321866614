"""`make run`'s runner: honcho on the Procfile, stopped cleanly by Ctrl-C.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group, make included, so
make reported the stop as a failure (`make: *** [run] Error 130` or `Interrupt`). Here honcho
runs in a process group of its own that is given the terminal: Ctrl-C reaches honcho (which
stops the web and worker processes) and not make; then the terminal is taken back, a one-line
goodbye printed, and the exit status is 0. Any other ending keeps honcho's exit status.

    python scripts/run_procfile.py honcho start -f Procfile -p 5000
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

INTERRUPTED = (130, -signal.SIGINT)


def _give_terminal(tty: int, pgrp: int) -> None:
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)   # a background group may take it back
    try:
        os.tcsetpgrp(tty, pgrp)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def main(argv: list[str]) -> int:
    try:
        tty = os.open("/dev/tty", os.O_RDWR)   # the controlling terminal, when there is one
        own_group = os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        tty, own_group = None, False
    interrupted = False

    def forward(signum, _frame):   # a signal sent to us (no terminal, or before the hand-over)
        nonlocal interrupted
        interrupted = interrupted or signum == signal.SIGINT
        proc.send_signal(signum)

    proc = subprocess.Popen(argv, process_group=0)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    if own_group:
        _give_terminal(tty, proc.pid)
    code = proc.wait()
    if own_group:
        _give_terminal(tty, os.getpgrp())
    if interrupted or code in INTERRUPTED or (own_group and code == 0):
        print("\n  Peerline stopped. Goodbye.", flush=True)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
