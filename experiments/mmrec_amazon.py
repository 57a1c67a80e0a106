r"""Amazon Baby / Sports / Clothing in MMRec's format (the multimodal papers' benchmarks).

  python -m mmrec_jax.main --config=experiments/mmrec_amazon.py:baby \
      --config.data.path=/data/mmrec/baby --workdir=runs/baby

``data.path`` is a directory with ``<name>.inter`` (x_label split column), image_feat.npy
(4096-d) and text_feat.npy (384-d), as distributed by MMRec. The split is kept as given.
Variants: ``baby``, ``sports``, ``clothing`` (the dataset name), ``smoke``, a model name.
"""

from mmrec_jax import config as config_lib


def get_config(arg: str | None = None):
  names = ("baby", "sports", "clothing")
  variants = config_lib.parse_variants(arg, ("smoke",) + names + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.data.source = "mmrec"
  c.data.name = next((n for n in names if n in variants), "baby")
  c.data.modalities = ("text", "image")
  c.model.name = "two_tower"
  c.model.embed_dim = 64
  c.input.batch_size = 2048
  c.train.num_epochs = 50
  c.train.eval_every_epochs = 1
  c.train.early_stopping_patience = 10
  c.train.selection_metric = "recall@20"
  config_lib.apply_model_variant(c, variants)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.train.selection_metric = "recall@10"
  return config_lib.finalize(c)
