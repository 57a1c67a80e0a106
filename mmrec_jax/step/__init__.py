"""The sharded train step, state init and evaluation representations of every model.

One module per job:
  types.py      ``DataInfo`` (what the step knows of the data) and the ``State`` pytree type
  placement.py  frozen feature tables and masks on device, row-sharded like item tables
  state.py      ``StateLayout``: the state pytree, ``init`` and its shardings
  batch.py      ``BatchContract``: the keys and shapes a train batch must have
  update.py     what both regimes share: ranking objective, clipping, sparse + dense update
  regime.py     the regime interface and the ``Setup`` it receives
  rows.py       the gathered-rows regime (cost grows with the batch, not the catalogue)
  graph.py      the whole-table regime of graph models
  task.py       ``Task``: wires the parts; the regime comes from the model's registry entry

Public API: ``from mmrec_jax.step import Task, DataInfo``.
"""

from mmrec_jax.step.rows import STREAM_EVAL_CHUNK
from mmrec_jax.step.task import REGIMES, Task
from mmrec_jax.step.types import COMPUTE_DTYPES, DataInfo, State

__all__ = ["COMPUTE_DTYPES", "REGIMES", "STREAM_EVAL_CHUNK", "DataInfo", "State", "Task"]
