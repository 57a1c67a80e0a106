r"""MovieLens-1M, multimodal two-tower model (IDs + handcrafted text features).

  python -m mmrec_jax.main --config=experiments/ml1m.py --workdir=runs/ml1m

Reads ratings.dat/movies.dat from GroupLens (checksummed, cached) or from a local
directory given by ``--config.data.path=DIR``. Variants: ``smoke`` and a model name.
"""

from mmrec_jax import config as config_lib


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(arg, ("smoke",) + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.data.source = "movielens"
  c.data.variant = "1m"
  c.data.split = "temporal_ratio"
  c.data.modalities = ("text",)
  c.data.text_features = "auto"  # MiniLM when the `text` extra is installed
  c.model.name = "two_tower"
  c.input.batch_size = 4096
  c.train.num_epochs = 20
  c.train.eval_every_epochs = 2
  config_lib.apply_model_variant(c, variants)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.data.text_features = "handcrafted"
  return config_lib.finalize(c)
