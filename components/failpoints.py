"""Named kill points for the fault tests: SIMCLR_TFX_FAILPOINT=<name> makes the process SIGKILL
itself when it reaches that point, so a test can crash a run at an exact place (mid-ingest,
between staging and renaming a push) instead of racing a timer. <name>:SIGINT (or :SIGTERM)
sends that signal instead, as a person pressing Ctrl-C there would. Unset, it does nothing."""
import logging
import os
import signal

ENV = 'SIMCLR_TFX_FAILPOINT'


def hit(name: str) -> None:
  point, _, signal_name = os.environ.get(ENV, '').partition(':')
  if point == name:
    signum = signal.Signals[signal_name or 'SIGKILL']
    logging.error('failpoint %s: sending %s to this process as asked by %s', name, signum.name,
                  ENV)
    os.kill(os.getpid(), signum)
