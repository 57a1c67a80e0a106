r"""MovieLens-25M at scale: sharded two-tower model with text (and optional image) features.

  python -m mmrec_jax.main --config=experiments/ml25m.py --workdir=runs/ml25m

Text features come from titles, genres and tags. Image features are used when a feature
directory is given (``--config.data.modalities=text,image`` with an ``image`` modality
written into the prepared dataset by ``python -m mmrec_jax.features``). Data from
GroupLens (checksummed, cached) or ``--config.data.path=DIR`` with ratings.csv etc.
Variants: ``smoke`` and a model name.
"""

from mmrec_jax import config as config_lib


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(arg, ("smoke",) + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.data.source = "movielens"
  c.data.variant = "25m"
  c.data.rating_threshold = 4.0
  c.data.split = "temporal_ratio"
  c.data.modalities = ("text",)
  c.data.text_features = "auto"  # MiniLM when the `text` extra is installed
  c.model.name = "two_tower"
  c.model.embed_dim = 64
  c.input.batch_size = 65536
  c.input.negative_sampler = "in_batch"
  c.loss.name = "sampled_softmax"
  c.optimizer.sparse = "rowwise_adagrad"
  c.optimizer.sparse_learning_rate = 0.05
  c.train.num_epochs = 10
  c.train.eval_every_epochs = 1
  c.train.checkpoint_every_steps = 500
  c.eval.user_chunk = 4096
  config_lib.apply_model_variant(c, variants)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.data.text_features = "handcrafted"
    c.mesh.min_sharded_bytes = 1 << 12
  return config_lib.finalize(c)
