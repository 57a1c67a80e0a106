r"""Synthetic data with planted multimodal structure, any size (default ~ML-1M shape).

  python -m mmrec_jax.main --config=experiments/synthetic.py --workdir=runs/syn

Variants: ``smoke``, ``ml25m`` (162,541 users x 59,047 items x 25M interactions), and a
model name. Synthetic data is labelled as such in the manifest and in every result.
"""

from mmrec_jax import config as config_lib


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(arg, ("smoke", "ml25m") + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.data.source = "synthetic"
  c.data.num_users = 6040
  c.data.num_items = 3706
  c.data.num_interactions = 1_000_000
  c.data.modalities = ("text", "image")
  c.data.split = "temporal_ratio"
  c.model.name = "two_tower"
  c.input.batch_size = 4096
  c.train.num_epochs = 10
  if "ml25m" in variants:
    c.data.num_users, c.data.num_items, c.data.num_interactions = 162_541, 59_047, 25_000_000
    c.input.batch_size = 65536
  config_lib.apply_model_variant(c, variants)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.data.num_users, c.data.num_items, c.data.num_interactions = 200, 150, 4000
    c.data.text_dim, c.data.image_dim = 16, 32
  return config_lib.finalize(c)
