"""Named kill points for the fault tests: SIMCLR_TFX_FAILPOINT=<name> makes the process SIGKILL
itself when it reaches that point, so a test can crash a run at an exact place (mid-ingest,
between staging and renaming a push) instead of racing a timer. Unset, it does nothing."""
import logging
import os
import signal

ENV = 'SIMCLR_TFX_FAILPOINT'


def hit(name: str) -> None:
  if os.environ.get(ENV) == name:
    logging.error('failpoint %s: killing this process (SIGKILL) as asked by %s', name, ENV)
    os.kill(os.getpid(), signal.SIGKILL)
