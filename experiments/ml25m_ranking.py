r"""MovieLens-25M pointwise ranking: the Merlin multi-modal notebooks' workflow.

  python -m mmrec_jax.main --config=experiments/ml25m_ranking.py --workdir=runs/rank25m

As in the notebooks: every rating kept, label = rating > 3, a seeded global random 80/20
split (``data.seed=42``); 16-d trainable user, movie and genre (multi-hot, sum-pooled)
embeddings plus the frozen item feature tables of ``data.modalities`` concatenated into
an MLP 128-ReLU-128-ReLU-1; BCE; Adam 1e-3; batch 2048; one epoch (~8.8k steps, the
notebooks ran ~10k iterations); AUC / GAUC / LogLoss on held-out rows. Differences, on
purpose: 10% of the train rows are carved out as validation for model selection (the
notebooks evaluated on the test rows during training); validation AUC every 200 steps
(``train.eval_every_steps``) as the notebooks' curve, each validation also a checkpoint.

Content features: ``data.modalities=('text',)`` uses the handcrafted text table
(titles, genres, tags, genome tags); the notebooks' ResNet-50 poster (2048-d) and
BART-large synopsis (1024-d) tables are modalities written into the prepared dataset by
``python -m mmrec_jax.features`` (then ``--config.data.modalities=image,text``).

Variants (comma-separated after ':'): ``smoke``; a ranker (``mlp_ranker`` default,
``dlrm``, ``dcn_v2``, ``deepfm``); ``ids`` (IDs + genres only: what the notebooks' logged
run measured, its features being random placeholders); ``implicit``.
"""

import importlib.util
import pathlib

from mmrec_jax import config as config_lib


def _ranking_base():
  """``base`` of experiments/ml100k_ranking.py (experiments are files, not a package)."""
  path = pathlib.Path(__file__).with_name("ml100k_ranking.py")
  spec = importlib.util.spec_from_file_location("ml100k_ranking", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  shared = _ranking_base()
  variants = config_lib.parse_variants(arg, ("smoke", "ids", "implicit") + shared.RANKERS)
  c = config_lib.base_config()
  c.data.source = "movielens"
  c.data.variant = "25m"
  shared.base(c, variants)
  c.data.side_features = ("genre", "year")  # ML-25M has no user side table
  c.data.modalities = () if "ids" in variants else ("text",)
  c.input.batch_size = 2048
  c.input.num_negatives = 1
  c.train.num_epochs = 1
  c.train.eval_every_epochs = 1
  c.train.eval_every_steps = 200
  c.train.early_stopping_patience = 0
  c.train.log_every_steps = 200
  c.eval.pointwise_chunk = 1 << 18
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.mesh.min_sharded_bytes = 1 << 12
  return config_lib.finalize(c)
