"""The parts of the training loop (``mmrec_jax/train.py`` composes them).

setup.py          mesh and batch checks, data for the model, the train pipeline
steps.py          where steps come from: the grain pipeline or epochs made on device
early_stopping.py model selection on validation: best metric, patience
flush.py          fetching step metrics in groups, NaN check, examples/s, logging rows
report.py         the final evaluation of the best model and results.json
signals.py        SIGTERM as a flag between steps; deterministic fault-injection hooks
"""
