"""Command line: ``python -m mmrec_jax.main --config=experiments/ml100k.py --workdir=DIR``.

Thin on purpose (as flax examples/imagenet/main.py): parse flags and the ml_collections
config file, initialise jax.distributed when run as several processes, and call
:func:`mmrec_jax.train.train_and_evaluate`. The same command on the same workdir resumes.
Errors about user input (data files, config keys) print as one line, without a traceback.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mmrec_jax import distributed  # defines the multi-process flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. experiments/ml100k.py[:smoke].",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "prepare"],
                  "train: train and evaluate; prepare: only prepare the dataset and print "
                  "its statistics.")
flags.mark_flags_as_required(["config"])


def _quiet_library_logs() -> None:
  """INFO lines from mmrec_jax only; libraries (orbax, jax) speak at WARNING and up."""
  import logging as py_logging  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= py_logging.WARNING or "mmrec_jax" in r.pathname)


def run(argv) -> int:
  del argv
  _quiet_library_logs()
  # Imported here so that `--help` and flag errors stay fast.
  from mmrec_jax.errors import MmrecError  # pylint: disable=g-import-not-at-top
  try:
    distributed.initialize_from_flags()
    config = FLAGS.config
    if FLAGS.mode == "prepare":
      from mmrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
      ds = prepare_lib.prepare(config.data)
      print(prepare_lib.describe(ds))
      return 0
    if not FLAGS.workdir:
      raise MmrecError("--workdir is required for --mode=train")
    from mmrec_jax import reporting  # pylint: disable=g-import-not-at-top
    from mmrec_jax import train  # pylint: disable=g-import-not-at-top
    results = train.train_and_evaluate(config, FLAGS.workdir)
    if results.get("status") == "finished":
      print(f"\n{config.model.name} on {config.data.source}: test metrics "
            f"(best validation step {results['best_step']}, "
            f"{results['train_seconds']:.1f} s training)")
      print(reporting.metrics_table(results))
      print(f"results: {FLAGS.workdir}/results.json")
    else:
      print(f"run {results['status']} at step {results['steps']}; rerun the same command "
            "to resume")
    return 0
  except MmrecError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 2


def main() -> None:
  app.run(lambda argv: sys.exit(run(argv)))


if __name__ == "__main__":
  main()
