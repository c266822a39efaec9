"""The test suite's own hang guards (tests/helpers.py): a hang fails the test, nothing else is timed."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from helpers import Hang, no_hang, run_no_hang


def test_no_hang_fails_a_hang_and_restores_the_alarm_handler():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Hang, match="hang: sleeping still running after 0.2 s"):
        with no_hang("sleeping", seconds=0.2):
            time.sleep(30)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with no_hang("nothing", seconds=0.2):  # what finishes in time passes, and no alarm is left behind
        pass
    time.sleep(0.3)


def test_run_no_hang_kills_a_hung_child():
    with pytest.raises(Hang, match="still running after 0.5 s"):
        run_no_hang([sys.executable, "-c", "import time; time.sleep(30)"], seconds=0.5)
