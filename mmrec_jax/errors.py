"""Error types whose message is the whole story: one line naming file/row/key and problem.

``main`` catches :class:`MmrecError` and prints ``error: <message>`` without a traceback,
so every message must name where the problem is (file and row, or config key) and what
is wrong with it.
"""


class MmrecError(Exception):
  """Base class of the errors shown to users as one line."""


class DataError(MmrecError, ValueError):
  """Bad input data: a file, row, column or array that cannot be used."""

  def __init__(self, where: str, problem: str):
    self.where = where
    self.problem = problem
    super().__init__(f"{where}: {problem}")


class ConfigError(MmrecError, ValueError):
  """A config key with a bad or conflicting value."""
