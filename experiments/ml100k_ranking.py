r"""MovieLens-100K / 1M pointwise ranking: the Merlin ML-25M notebooks' workflow, small.

  python -m mmrec_jax.main --config=experiments/ml100k_ranking.py --workdir=runs/rank100k
  python -m mmrec_jax.main --config=experiments/ml100k_ranking.py:two_stage --workdir=runs/2stage
      (two stages in one run: BPR-MF retrieves the top 100, the ranker re-orders them;
      mmrec_jax/two_stage.py, which also has its own command with retrieval overrides)

Every rating is kept; label = rating > 3 (the lower ratings are the negatives); a seeded
global random 80/20 split (``data.seed=42``; Cornac's RatioSplit permutation), with 10%
of the train rows carved out as validation for model selection (so training sees 72%);
AUC / GAUC / LogLoss on the held-out rows (model selection on valid AUC).

Inputs of the ranker: 16-d user and movie ID embeddings, categorical side features
(genres multi-hot sum-pooled, release decade, user age band / gender / occupation / zip
region) and, unless ``:ids``, the frozen handcrafted item-text table
(``mmrec_jax/features/handcrafted.py``: TF-IDF of title/tags + genres + year) as the
content features; MLP 128-ReLU-128-ReLU-1, BCE, Adam 1e-3.

Variants (comma-separated after ':'): ``smoke``; a ranker (``mlp_ranker`` default,
``dlrm``, ``dcn_v2``, ``deepfm``); ``ids`` (no content features); ``1m`` (MovieLens-1M:
needs ml-1m.zip in the cache or ``data.path``); ``implicit`` (every rating a positive,
one sampled negative per positive); ``two_stage`` (``two_stage.candidates=100``: retrieval
then ranking in one run).
"""

from mmrec_jax import config as config_lib

RANKERS = ("mlp_ranker", "dlrm", "dcn_v2", "deepfm")
SIDE = ("age", "gender", "genre", "occupation", "year", "zip")


def base(c, variants: set[str]) -> None:
  """The settings every ranking experiment shares (also used by ml25m_ranking)."""
  c.data.rating_threshold = -1.0  # keep every row: low ratings are the negatives
  c.data.label_threshold = 3.0
  c.data.split = "global_random"
  c.data.split_ratios = (0.8, 0.0, 0.2)
  c.data.valid_of_train = 0.1
  c.data.seed = 42
  c.data.text_features = "handcrafted"
  c.model.name = "mlp_ranker"
  c.model.embed_dim = 16
  c.model.hidden_dim = 128
  c.model.num_layers = 2
  c.loss.l2 = 0.0
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.sparse = "adam"
  c.optimizer.sparse_learning_rate = 1e-3
  c.train.selection_metric = "auc"
  c.eval.slices = False
  c.eval.beyond = ()
  if "implicit" in variants:
    c.data.label_threshold = -1.0
  for name in RANKERS:
    if name in variants:
      c.model.name = name


def get_config(arg: str | None = None):
  variants = config_lib.parse_variants(
    arg, ("smoke", "ids", "1m", "implicit", "two_stage") + RANKERS
  )
  c = config_lib.base_config()
  c.data.source = "movielens"
  c.data.variant = "1m" if "1m" in variants else "100k"
  base(c, variants)
  c.data.side_features = SIDE
  c.data.modalities = () if "ids" in variants else ("text",)
  c.input.batch_size = 512
  c.input.num_negatives = 1
  c.train.num_epochs = 10
  c.train.eval_every_epochs = 1
  c.train.early_stopping_patience = 3
  c.train.log_every_steps = 50
  c.mesh.min_sharded_bytes = 1 << 16
  if "1m" in variants:
    c.input.batch_size = 2048
  if "two_stage" in variants:
    c.two_stage.candidates = 100
  if "smoke" in variants:
    config_lib.apply_smoke(c)
    c.two_stage.retrieval_batch_size = c.input.batch_size
    c.two_stage.candidates = min(c.two_stage.candidates, 20)
  return config_lib.finalize(c)
