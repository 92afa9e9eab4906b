"""The one error hierarchy of simclr-tfx (TensorFlow-free).

Every failure a user can cause or fix (a bad setting, unusable data, a locked or unwritable
output folder, a model server that refuses a request, a failed Kubeflow task) raises a subclass
of SimclrTfxError whose message says what went wrong and what to do. The CLI and the runners
print that message as one line and exit with the class's exit_code; anything else is a bug or
an environment failure and keeps its traceback under -v.
"""
from __future__ import annotations

import sys

EXIT_FAILURE, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130


class SimclrTfxError(Exception):
  """An expected failure with an actionable message."""
  exit_code = EXIT_FAILURE


class ConfigError(SimclrTfxError, ValueError):
  """A setting is unknown, of the wrong type or out of range (exit 2, before any work)."""
  exit_code = EXIT_CONFIG


class IngestError(SimclrTfxError, RuntimeError):
  """The source cannot produce a usable data set (empty, missing, nothing valid)."""


class PushError(SimclrTfxError, RuntimeError):
  """A push cannot be published (a URI base, the serving lock never freed, ...)."""


class RunLockedError(SimclrTfxError, RuntimeError):
  """Another run is using the same output folder."""


class OutputFolderError(SimclrTfxError, RuntimeError):
  """The output folder cannot be created or written."""


class ServingError(SimclrTfxError, RuntimeError):
  """The model server answered with an error, or could not be reached."""


class KfpSubmitError(SimclrTfxError, RuntimeError):
  """The cluster could not be reached or refused a request; the message is one line."""


class TrainingJobFailed(SimclrTfxError, RuntimeError):
  """A worker of a multi-worker training job failed; the others were stopped."""


class TaskFailed(SimclrTfxError, RuntimeError):
  """A task of a compiled Kubeflow package failed when run on this machine."""


_RESUME_HINT = ('running steps were marked FAILED in ML Metadata; run the same command again to '
                'resume (finished steps are reused, training continues from its last checkpoint)')


def describe(error: BaseException) -> tuple[int, str]:
  """(exit code, one line) for an error that ends a run or a command."""
  if isinstance(error, KeyboardInterrupt):
    return EXIT_INTERRUPTED, (f'interrupted ({error.args[0] if error.args else "SIGINT"}); '
                              + _RESUME_HINT)
  if isinstance(error, SimclrTfxError):
    return error.exit_code, str(error)
  if isinstance(error, (FileNotFoundError, LookupError)):
    return EXIT_FAILURE, str(error)
  if isinstance(error, OSError) and error.errno is not None:
    where = f' ({error.filename})' if error.filename else ''
    return EXIT_FAILURE, f'{error.strerror}{where}: the run stopped; nothing partial was published'
  first_line = str(error).splitlines()[0] if str(error) else ''
  return EXIT_FAILURE, (f'run failed: {type(error).__name__}: {first_line} (the log above has the '
                        'details; rerun with -v for a traceback)')


def report_failure(error: BaseException, verbose: bool) -> int:
  """Prints one line for `error` and returns the exit code: 2 for the config, 130 for an
  interrupt, 1 otherwise. SystemExit passes through; with verbose (-v) any error but a config
  error or an interrupt is re-raised, so its traceback shows."""
  if isinstance(error, (SystemExit, GeneratorExit)) or (
      verbose and not isinstance(error, (KeyboardInterrupt, ConfigError))):
    raise error
  code, line = describe(error)
  print(f'simclr-tfx: {line}', file=sys.stderr)
  return code
