"""The one entry point every project's `main.py` calls (flax examples, scenic `app.py`).

    # <project>/main.py
    from common import app
    from <project> import train

    if __name__ == '__main__':
      app.run(train.train_and_evaluate)

It defines the flags `--config` (an ml_collections config file, locked after parsing, with `:arg` and
`--config.key=value` overrides), `--workdir` and `--overwrite`; calls `jax.distributed.initialize()` when a
multi-host launch is detected; logs the host and devices; prepares the workdir (writes `config.json`,
refuses a workdir that holds another config unless `--overwrite`, resumes when it matches); then calls
`main(config, workdir)`. A `UsageError` anywhere (bad config, workdir, checkpoint, NaN metric) ends the
process with one line on stderr and exit code 2, and nothing in the workdir is deleted.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Callable

from absl import app as absl_app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from common import config as config_lib
from common import distributed
from common.errors import UsageError, WorkdirError

CONFIG_FILE = 'config.json'
EXIT_USAGE = 2

MainFn = Callable[[ml_collections.ConfigDict, str], Any]


def _define_flags() -> None:
  if 'workdir' in flags.FLAGS:  # run() called twice in one process (tests).
    return
  config_flags.DEFINE_config_file(
    'config',
    None,
    'Config file, e.g. <project>/configs/default.py:smoke. Override single keys with --config.key=value.',
    lock_config=True,
  )
  flags.DEFINE_string(
    'workdir',
    None,
    'Run directory: config.json, metrics, checkpoints, results. '
    'Rerunning with the same config resumes from its latest checkpoint.',
  )
  flags.DEFINE_bool(
    'overwrite',
    False,
    'Start fresh in a workdir that holds another config: the old run '
    'is moved aside into <workdir>/replaced-<time>/, never deleted.',
  )
  flags.mark_flags_as_required(['config', 'workdir'])


def fail(message: str) -> None:
  """Ends the process with one line on stderr (the problem and its fix) and exit code 2."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


_HELP = ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:
    if e.code == 1 and any(a in _HELP for a in argv[1:]):
      sys.exit(0)  # absl exits 1 after printing help; asking for help is not a failure.
    raise
  except UsageError as e:  # Raised by get_config / parse_arg while --config is parsed.
    fail(str(e))
  except flags.Error as e:
    cause = _usage_error_in_chain(e)
    fail(str(cause) if cause else f'{_one_line(e)} (see --helpshort)')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for a bad `--config.key=value` (unknown key, wrong type).
    cause = _usage_error_in_chain(e)
    if cause:
      fail(str(cause))
    kind = 'unknown key in' if isinstance(e, (AttributeError, KeyError)) else 'bad value in'
    fail(
      f'{kind} a --config.key=value override: {_one_line(e)}; the config file lists the valid keys '
      'and their types'
    )
  return []  # Unreachable.


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).replace('\\n', ' ').replace('\\', '').replace("'", '').split())


def _usage_error_in_chain(error: BaseException) -> UsageError | None:
  """The innermost UsageError that absl/config_flags wrapped (config_flags re-raises it as a new error of
  the same type whose text is the whole traceback, so the original is the deepest one)."""
  seen, found = set(), None
  while error is not None and id(error) not in seen:
    if isinstance(error, UsageError):
      found = error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return found


def prepare_workdir(
  workdir: str, config: ml_collections.ConfigDict | dict, *, overwrite: bool = False, write: bool = True
) -> str:
  """Makes `workdir` ready for a run of `config`.

  Returns:
    'new' for an empty or unseen workdir, 'resume' when its config.json equals `config`, 'replaced'
    when another config's run was moved aside (only with `overwrite`).

  Raises:
    WorkdirError: the directory cannot be created or written, its config.json is unreadable, or it holds
      another config and `overwrite` is False. Nothing in it is changed then.
  """
  new = config_lib.to_dict(config)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(
      f'cannot create workdir {workdir} ({e.strerror}); choose another --workdir or fix '
      'the permissions of its parent'
    ) from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise WorkdirError(
      f'workdir {workdir} is not writable by this user; fix its permissions or choose another --workdir'
    )
  path = os.path.join(workdir, CONFIG_FILE)
  status = 'new'
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise WorkdirError(f'cannot read {path} ({e}); move it away or choose another --workdir') from None
    changed = config_lib.diff(old, new)
    if not changed:
      return 'resume'
    shown = ', '.join(changed[:6]) + (f' and {len(changed) - 6} more' if len(changed) > 6 else '')
    if not overwrite:
      raise WorkdirError(
        f'workdir {workdir} holds a run with another config (differs in {shown}); rerun '
        'with its config to resume, pass --overwrite to move that run aside and start '
        'fresh, or choose another --workdir'
      )
    if write:
      aside = os.path.join(workdir, time.strftime('replaced-%Y%m%d-%H%M%S', time.gmtime()))
      os.makedirs(aside)
      for name in os.listdir(workdir):
        if not name.startswith('replaced-'):
          os.replace(os.path.join(workdir, name), os.path.join(aside, name))
      logging.warning('workdir held another config (differs in %s); moved it to %s', shown, aside)
    status = 'replaced'
  if write:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return status


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter from Orbax (several lines per save); its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or '/orbax/' not in record.pathname


def log_environment() -> None:
  import jax

  logging.info(
    'host %s, process %d of %d, jax %s, backend %s',
    socket.gethostname(),
    jax.process_index(),
    jax.process_count(),
    jax.__version__,
    jax.default_backend(),
  )
  logging.info('devices: %s', ', '.join(str(d) for d in jax.devices()))


def run(main: MainFn, argv: list[str] | None = None) -> None:
  """Parses the flags and calls `main(config, workdir)`; see the module docstring."""
  _define_flags()

  def _main(unused_argv):
    logging.get_absl_logger().addFilter(_QuietLibraries())
    distributed.maybe_initialize()
    import jax

    log_environment()
    config = flags.FLAGS.config
    workdir = os.path.abspath(flags.FLAGS.workdir)
    try:
      status = prepare_workdir(
        workdir, config, overwrite=flags.FLAGS.overwrite, write=jax.process_index() == 0
      )
      logging.info('workdir %s (%s run)', workdir, status)
      main(config, workdir)
    except UsageError as e:
      fail(str(e))

  absl_app.run(_main, argv=argv, flags_parser=_parse_flags)
