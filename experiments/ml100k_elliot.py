r"""MovieLens-100K under the protocol of the RecSys Summer School 2024 hands-on (Elliot).

  python -m mmrec_jax.main --config=experiments/ml100k_elliot.py --workdir=runs/elliot_vbpr

The hands-on ran multimodal VBPR in Elliot on Amazon Office with ResNet-50 + MPNet
features from Ducho; here the same protocol runs on MovieLens-100K with our text features:

* split: random 80/20 hold-out per user (``data.split=random_ratio``, seeded), then a
  validation set of 10% of the train rows, drawn at random (``data.valid_of_train=0.1``);
  every rating is an interaction (implicit feedback, as in the hands-on);
* model: VBPR over TWO modalities concatenated (the hands-on: visual + textual): the
  handcrafted text features (TF-IDF, genres, year; modality ``text``) and
  all-MiniLM-L6-v2 sentence vectors of the titles (``text_minilm``, extracted once when
  the ``text`` extra is installed); 64 factors, learning rate 0.005, batch 1024;
* evaluation: full ranking, train items masked (train + valid at test); Recall/NDCG @10
  and @20 (the hands-on reports Recall@20), model selection on valid Recall@20; AUC/GAUC,
  RecBole's uni100 sampled metrics and the beyond-accuracy metrics (intra-list diversity
  over the MiniLM vectors) beside them.

Variants: ``:smoke`` (seconds, handcrafted text only), ``:<model>`` picks another model.
"""

from mmrec_jax import config as config_lib


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(arg, ("smoke",) + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.seed = 42
  c.data.source = "movielens"
  c.data.variant = "100k"
  c.data.seed = c.seed  # the split's seed (training prepares from data)
  c.data.split = "random_ratio"
  c.data.split_ratios = (0.8, 0.0, 0.2)
  c.data.valid_of_train = 0.1
  c.data.modalities = ("text", "text_minilm")
  c.data.text_features = "handcrafted"  # 'text' = handcrafted; MiniLM is the 2nd modality
  c.model.name = "vbpr"
  c.model.embed_dim = 64
  c.input.batch_size = 1024
  c.input.exclude_positives = True
  c.optimizer.learning_rate = 0.005
  c.optimizer.sparse_learning_rate = 0.005
  c.train.num_epochs = 60
  c.train.eval_every_epochs = 5
  c.train.early_stopping_patience = 3
  c.train.selection_metric = "recall@20"
  c.train.log_every_steps = 50
  c.eval.ks = (10, 20)
  c.eval.metrics = ("recall", "ndcg", "precision")
  c.eval.full_metrics = ("auc", "gauc")
  c.eval.sampled = "uni100"
  c.eval.beyond = ("coverage", "gini", "novelty", "arp", "ild")
  c.eval.ild_modality = "text_minilm"
  c.mesh.min_sharded_bytes = 1 << 16
  config_lib.apply_model_variant(c, variants)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.eval.ks = (10, 20)
    c.data.modalities = ("text",) if c.data.modalities else ()
    c.eval.ild_modality = "text"
  return config_lib.finalize(c)
