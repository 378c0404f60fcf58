"""Errors that mean "the user asked for something that cannot work".

`common.app` catches `UsageError` and prints its message as one line (no traceback), so every message must
name the problem *and* the fix. Anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
  """Base class: a bad config, flag, workdir or checkpoint, explained in one line."""


class ConfigError(UsageError, KeyError, ValueError):
  """An unknown config key or a value of the wrong type.

  Also a KeyError/ValueError so callers that catch those (ml_collections, absl) keep working.
  """

  def __str__(self):  # KeyError would quote the message; keep it readable.
    return str(self.args[0]) if self.args else ''


class WorkdirError(UsageError):
  """The workdir cannot be used: no permission, not a directory, or it holds another run's config."""


class CheckpointMismatchError(UsageError):
  """A checkpoint in the workdir does not fit the model/state being restored."""


class NonFiniteError(UsageError):
  """A logged metric was NaN or inf; the run stops and the last good checkpoint stays."""
