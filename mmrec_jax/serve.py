"""Command line: serve, batch-score or export a trained run.

    python -m mmrec_jax.serve --workdir=DIR --port=8000               # HTTP (127.0.0.1)
    python -m mmrec_jax.serve --workdir=DIR --mode=batch --out=TOPK --k=100 [--format=tsv]
    python -m mmrec_jax.serve --workdir=DIR --mode=export --out=EXPORT

Why one command with modes: all three start the same way (restore the best checkpoint of
the run onto this machine's devices, ``serving.Recommender.load``) and differ only in
what they do with it. Errors about user input print as one ``error: ...`` line (exit 2),
as ``mmrec_jax.main`` does. ``--mode=batch`` runs as several processes with the flags of
``mmrec_jax.distributed``; each writes its own part file (``serving/batch.py``).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from mmrec_jax import distributed  # defines the multi-process flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a finished training run.")
flags.DEFINE_enum(
  "mode",
  "serve",
  ["serve", "batch", "export"],
  "serve: HTTP server; batch: top-K lists to files; export: embeddings, "
  "ANN index and jax.export scorers.",
)
flags.DEFINE_string("host", "127.0.0.1", "serve: interface to listen on.")
flags.DEFINE_integer("port", 8000, "serve: TCP port.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Checkpoint to restore.")
flags.DEFINE_string("out", None, "batch/export: output directory.")
flags.DEFINE_integer("k", 100, "batch: list length; export: largest k of the scorer.")
flags.DEFINE_enum("format", "parquet", ["parquet", "tsv"], "batch: file format.")
flags.DEFINE_string(
  "users", None, "batch: file with one raw user id per line (default: every user)."
)
flags.DEFINE_bool("exclude_seen", True, "batch: drop already-seen items.")
flags.DEFINE_bool("ann", True, "export: build the faiss HNSW index.")
flags.DEFINE_integer("max_batch", 64, "serve: requests ranked together.")
flags.DEFINE_float("max_wait_ms", 2.0, "serve: longest wait for a batch to fill.")
flags.DEFINE_integer("max_inflight", 256, "serve: admitted requests at once (more: 503).")
flags.DEFINE_integer("max_body_bytes", 65536, "serve: largest request body (more: 413).")
flags.DEFINE_integer("max_list", 1000, "serve: most ids in history/candidates (more: 413).")
flags.mark_flags_as_required(["workdir"])


def _quiet_library_logs() -> None:
  """INFO lines from mmrec_jax only (as ``mmrec_jax.main``); orbax, jax at WARNING and up."""
  import logging as py_logging  # noqa: PLC0415

  logging.get_absl_handler().addFilter(
    lambda r: r.levelno >= py_logging.WARNING or "mmrec_jax" in r.pathname
  )


def run(argv) -> int:
  del argv
  _quiet_library_logs()
  from mmrec_jax.errors import MmrecError  # noqa: PLC0415

  try:
    distributed.initialize_from_flags()
    from mmrec_jax.serving import Recommender  # noqa: PLC0415

    if FLAGS.mode in ("batch", "export") and not FLAGS.out:
      raise MmrecError(f"--out is required for --mode={FLAGS.mode}")
    rec = Recommender.load(FLAGS.workdir, checkpoint=FLAGS.checkpoint)
    if FLAGS.mode == "serve":
      from mmrec_jax.serving import server  # noqa: PLC0415

      settings = server.ServerSettings(
        max_batch=FLAGS.max_batch,
        max_wait_ms=FLAGS.max_wait_ms,
        max_inflight=FLAGS.max_inflight,
        max_body_bytes=FLAGS.max_body_bytes,
        max_list=FLAGS.max_list,
      )
      print(
        f"serving {rec.info.get('model')} ({rec.num_users} users, {rec.num_items} items) "
        f"on http://{FLAGS.host}:{FLAGS.port}",
        flush=True,
      )
      server.serve(rec, FLAGS.host, FLAGS.port, settings)
    elif FLAGS.mode == "batch":
      from mmrec_jax.serving import batch  # noqa: PLC0415

      users = None
      if FLAGS.users:
        with open(FLAGS.users, encoding="utf-8") as f:
          users = [line.strip() for line in f if line.strip()]
      path = batch.write_topk(
        rec, FLAGS.out, FLAGS.k, user_ids=users, fmt=FLAGS.format, exclude_seen=FLAGS.exclude_seen
      )
      print(f"wrote {path}")
    else:
      from mmrec_jax.serving import export  # noqa: PLC0415

      out = export.export(rec, FLAGS.out, max_k=FLAGS.k, ann=FLAGS.ann)
      print(f"wrote {out}")
    return 0
  except MmrecError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    return 2


def main() -> None:
  app.run(lambda argv: sys.exit(run(argv)))


if __name__ == "__main__":
  main()
