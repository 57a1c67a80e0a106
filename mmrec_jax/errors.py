"""Error types whose message is the whole story: one line naming file/row/key and problem.

``main`` catches :class:`MmrecError` and prints ``error: <message>`` without a traceback,
so every message must name where the problem is (file and row, or config key) and what
is wrong with it. The exit status tells scripts which kind of failure it was: 2 for bad
input (data, config, a workdir that belongs to another run), 1 for a runtime failure the
input did not cause (no intact checkpoint left, the workdir held by a running job, a full
disk); each class says which in ``exit_code``.
"""


class MmrecError(Exception):
  """Base class of the errors shown to users as one line."""

  exit_code = 2


class DataError(MmrecError, ValueError):
  """Bad input data: a file, row, column or array that cannot be used."""

  def __init__(self, where: str, problem: str):
    self.where = where
    self.problem = problem
    super().__init__(f"{where}: {problem}")


class ConfigError(MmrecError, ValueError):
  """A config key with a bad or conflicting value."""


class CheckpointError(MmrecError):
  """No checkpoint of the workdir can be restored (all damaged, or the best one lost)."""

  exit_code = 1


class WorkdirBusyError(MmrecError):
  """Another live run holds the workdir's lock."""

  exit_code = 1


# Optional modules -> the pip extra that installs them (pyproject.toml).
_EXTRA_OF_MODULE = {
  "tokenizers": "text",
  "safetensors": "text",
  "PIL": "text",
  "starlette": "serve",
  "uvicorn": "serve",
  "faiss": "serve",
  "pyarrow": "serve",
  "httpx": "serve",
}


def missing_extra_message(error: ModuleNotFoundError, what: str) -> str | None:
  """One line for an optional dependency that is not installed, or None for other modules.

  ``what`` names the feature that needed it ("the text encoder", "extraction").
  """
  module = (error.name or "").split(".")[0]
  extra = _EXTRA_OF_MODULE.get(module)
  if extra is None:
    return None
  return (
    f"{what} needs the '{extra}' extra (Python module {module!r} is not installed): "
    f"pip install -e '.[{extra}]'"
  )
