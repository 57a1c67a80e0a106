"""Command line: ``python -m mmrec_jax.main --config=experiments/ml100k.py --workdir=DIR``.

Thin on purpose (as flax examples/imagenet/main.py): parse flags and the ml_collections
config file, initialise jax.distributed when run as several processes, and call
:func:`mmrec_jax.train.train_and_evaluate`. The same command on the same workdir resumes.
Errors about user input (data files, config keys) print as one line, without a traceback,
and exit with status 2; runtime failures that are not bugs (no intact checkpoint, the
workdir held by another run, a full disk or read-only file system) print one line and
exit with status 1 (``errors.MmrecError.exit_code``).
"""

from __future__ import annotations

import difflib
import errno
import importlib.util
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mmrec_jax import distributed  # defines the multi-process flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file, e.g. experiments/ml100k.py[:smoke].", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum(
  "mode",
  "train",
  ["train", "prepare"],
  "train: train and evaluate; prepare: only prepare the dataset and print its statistics.",
)
flags.mark_flags_as_required(["config"])


def _quiet_library_logs() -> None:
  """INFO lines from mmrec_jax only; libraries (orbax, jax) speak at WARNING and up."""
  import logging as py_logging  # noqa: PLC0415

  logging.get_absl_handler().addFilter(
    lambda r: r.levelno >= py_logging.WARNING or "mmrec_jax" in r.pathname
  )


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _load_config_file(spec: str):
  """``path[:arg]`` -> the experiment's ConfigDict (as config_flags loads it)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_mmrec_jax_experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _config_error(argv: list[str], error: Exception) -> str:
  """One line naming the --config.* override behind ``error`` (raised while parsing).

  ml_collections reports an unknown key as a bare ``AttributeError`` or ``KeyError``
  holding the key and a multi-line hint, without the override it came from, so the
  overrides are checked again here, against the config file, to name the first one whose
  key does not exist.
  """
  spec, overrides = None, []
  for k, arg in enumerate(argv[1:], 1):
    if m := re.fullmatch(r"--?config(?:=(.*))?", arg):
      spec = m.group(1) if m.group(1) is not None else (argv[k + 1] if k + 1 < len(argv) else None)
    elif m := re.match(r"--?config\.([^=]+)", arg):
      overrides.append(m.group(1))
  try:
    config = _load_config_file(spec) if spec else None
  except Exception:
    config = None  # the original error says more than a second failure would
  if config is not None:
    from mmrec_jax.config import RENAMED_KEYS  # noqa: PLC0415  (after flag parsing)

    for path in overrides:
      if path in RENAMED_KEYS:
        return (
          f"--config.{path}: this key is now config.{RENAMED_KEYS[path]}; use "
          f"--config.{RENAMED_KEYS[path]}=..."
        )
    import ml_collections  # noqa: PLC0415

    for path in overrides:
      node, done = config, []
      for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
          return (
            f"--config.{path}: config.{'.'.join(done)} is a value, not a section "
            f"(it has no key {key!r})"
          )
        if key not in node:
          valid = sorted(node.keys())
          close = difflib.get_close_matches(key, valid, n=1)
          hint = f"did you mean {close[0]!r}? " if close else ""
          where = "config" + "".join(f".{d}" for d in done)
          return (
            f"--config.{path}: unknown config key {key!r} in {where} ({hint}valid: "
            f"{', '.join(valid)})"
          )
        node = node[key]
        done.append(key)
  return f"--config: {type(error).__name__}: {_one_line(error)}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but every error is one ``error: ...`` line and exit status 2.

  ml_collections raises plain exceptions (AttributeError, KeyError) from inside flag
  parsing for a mistyped ``--config.x.y`` override, which absl.app does not catch: the
  user would get a 60-line traceback instead of the name of the key.
  """
  try:
    rest = FLAGS(argv)
  except flags.Error as e:  # absl's own: unknown flag, bad value, config file raising
    message = str(e)
    if "Traceback (most recent call last)" in message:
      # config_flags puts the config file's whole traceback in the message: keep the
      # flag and the exception line ("ValueError: unknown config variant(s) ...").
      flag = message.split(": ", 1)[0]
      message = f"{flag}: {message.strip().splitlines()[-1].strip()}"
    message = _one_line(message)
  except Exception as e:
    message = _config_error(argv, e)
  else:
    # A config file that cannot be loaded does not fail parsing: config_flags returns a
    # placeholder that raises on first use. Use it now, while the error is still ours.
    try:
      if FLAGS["config"].present:
        FLAGS.config.keys()
      return rest
    except OSError as e:
      spec = getattr(FLAGS["config"], "config_filename", "?")
      last = str(e).strip().splitlines()[-1]
      message = f"--config={spec}: cannot load the config file ({_one_line(last)})"
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def run(argv) -> int:
  del argv
  _quiet_library_logs()
  # Imported here so that `--help` and flag errors stay fast.
  from mmrec_jax.errors import MmrecError  # noqa: PLC0415

  try:
    distributed.initialize_from_flags()
    config = FLAGS.config
    if FLAGS.mode == "prepare":
      from mmrec_jax.data import dataset as dataset_lib  # noqa: PLC0415
      from mmrec_jax.data import prepare as prepare_lib  # noqa: PLC0415

      # config.data, as train_and_evaluate prepares it: the same dataset, the same cache.
      ds = prepare_lib.prepare(config.data)
      print(dataset_lib.describe(ds))
      return 0
    if not FLAGS.workdir:
      raise MmrecError("--workdir is required for --mode=train")
    # Imported after flag parsing: --help and flag errors stay fast (no jax import).
    from mmrec_jax import reporting, train  # noqa: PLC0415

    if config.two_stage.candidates > 0:
      from mmrec_jax import two_stage  # noqa: PLC0415

      return two_stage.run_from_main(config, FLAGS.workdir)
    results = train.train_and_evaluate(config, FLAGS.workdir)
    if results.get("status") == "finished":
      print(
        f"\n{config.model.name} on {config.data.source}: test metrics "
        f"(best validation step {results['best_step']}, "
        f"{results['train_seconds']:.1f} s training)"
      )
      print(reporting.metrics_table(results))
      print(f"results: {FLAGS.workdir}/results.json")
    else:
      print(f"run {results['status']} at step {results['steps']}; rerun the same command to resume")
    return 0
  except MmrecError as e:
    logging.error("%s", e)
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return e.exit_code
  except ModuleNotFoundError as e:
    from mmrec_jax.errors import missing_extra_message  # noqa: PLC0415

    message = missing_extra_message(e, f"data.text_features={FLAGS.config.data.text_features!r}")
    if message is None:
      raise
    print(f"error: {message}", file=sys.stderr)
    return 2
  except Exception as e:
    # Environment failures (a full disk, a read-only or vanished file system) are one
    # line and exit status 1; anything else is a bug and keeps its traceback.
    os_error = _environment_error(e)
    if os_error is None:
      raise
    logging.error("%s", os_error)
    where = f"{os_error.filename}: " if getattr(os_error, "filename", None) else ""
    print(
      f"error: {where}{os_error.strerror or _one_line(os_error)} (errno "
      f"{errno.errorcode.get(os_error.errno, os_error.errno)})",
      file=sys.stderr,
    )
    return 1


# errno values that say "the machine/file system", not "the program": shown in one line.
_ENVIRONMENT_ERRNOS = frozenset(
  getattr(errno, n)
  for n in (
    "ENOSPC",
    "EDQUOT",
    "EROFS",
    "EACCES",
    "EPERM",
    "EIO",
    "ENOMEM",
    "EMFILE",
    "ENFILE",
    "ESTALE",
  )
  if hasattr(errno, n)
)


def _environment_error(e: BaseException) -> OSError | None:
  """The OSError with an environment errno behind ``e`` (itself or its causes), if any.

  Orbax and tensorstore re-raise a failed write from a background thread wrapped in
  their own exception types, so the chain is walked.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
      return e
    e = e.__cause__ or e.__context__
  return None


def main() -> None:
  app.run(lambda argv: sys.exit(run(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
  main()
