"""The one model registry: what each model is, declared once, importable without jax.

Every caller that needs to know something about a model asks here instead of comparing
model names: the trainer picks the training regime, ``train``/``compare``/experiments
learn whether a model consumes item features, the graph models read their paper
defaults, and hyperparameter search reads the search space. The model class itself is
imported lazily (``ModelSpec.load``), so reading the registry costs no jax import.

Adding a model is one file (the ``Recommender`` subclass) plus one :class:`ModelSpec`
line in ``MODELS`` below; a model defined outside the package (a notebook, a test) is
added at run time with :func:`register`. Nothing else names models.

Training regimes (``mmrec_jax/step/``):
  * ``rows``: the step gathers the table rows a batch touches and updates only those
    (cost grows with the batch, not the catalogue); the model implements the per-batch
    towers ``user_repr``/``item_repr`` of ``models/base.py``.
  * ``graph``: the model propagates whole tables over a graph built once from the train
    split (``models/graph_base.py``); the step takes whole-table gradients.
  * ``rating``: pointwise regression on explicit ratings over gathered rows
    (``step/rating.py``); the batch carries ``rating`` and no negatives.
  * ``pointwise``: binary cross-entropy on labelled (user, item) rows -- label = rating >
    ``data.label_threshold``, or implicit positives plus the batch's sampled negatives --
    for rankers that score a row through side features and an MLP/interaction instead of
    a dot product (``step/pointwise.py``, ``models/ranker_base.py``).
  * ``closed_form``: models fitted by sweeps over the whole train split instead of SGD
    (EASE, ItemKNN, MostPop: one closed-form sweep; iALS: one ALS iteration per sweep);
    one step = one sweep = one epoch (``step/closed_form.py``, ``models/fitted_base.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from mmrec_jax.errors import ConfigError

REGIMES = ("rows", "graph", "rating", "pointwise", "closed_form")
FEATURE_USE = ("none", "optional", "required")
# Distributions of a search space entry: ("log_float", lo, hi), ("float", lo, hi),
# ("int", lo, hi) or ("choice", (v1, v2, ...)); keys are dotted config paths.
DISTRIBUTIONS = ("log_float", "float", "int", "choice")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a model is, for everything outside ``models/``.

  Attributes:
    name: the ``model.name`` that selects it.
    target: ``"module:Class"`` (imported on first use) or the class itself.
    features: "none" (IDs only; ``data.modalities`` is ignored and dropped), "optional"
      (uses the configured modalities, also runs with none) or "required" (needs at
      least one modality; ``build_model`` fails otherwise).
    regime: "rows" or "graph" (module docstring).
    paper_defaults: values used where the config holds -1 for a field whose meaning
      differs per model (``model.reg_weight``, ``model.graph_dropout``); from the paper.
    search_space: dotted config key -> distribution tuple (``DISTRIBUTIONS``), the
      space hyperparameter search draws from for this model.
    reference: the paper, for humans.
    foldin, new_items, constant_user_columns: what serving can do without retraining
      (see the comment at the fields).
  """

  name: str
  target: str | type
  features: str = "none"
  regime: str = "rows"
  paper_defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)
  search_space: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  reference: str = ""
  # Serving (mmrec_jax/serving): how a new user is folded in ("" = unsupported), how a new
  # item is embedded from its features ("" = unsupported; the model then implements
  # ``content_item_repr``), and how many trailing user-vector columns are the constant 1
  # (an int, or a function of the model config).
  foldin: str = ""
  new_items: str = ""
  constant_user_columns: int | Callable[[Any], int] = 0

  def __post_init__(self):
    if self.features not in FEATURE_USE:
      raise ConfigError(
        f"model {self.name!r}: features={self.features!r} is not one of {list(FEATURE_USE)}"
      )
    if self.regime not in REGIMES:
      raise ConfigError(
        f"model {self.name!r}: regime={self.regime!r} is not one of {list(REGIMES)}"
      )
    for key, dist in self.search_space.items():
      if not dist or dist[0] not in DISTRIBUTIONS:
        raise ConfigError(
          f"model {self.name!r}: search_space[{key!r}]={dist!r} must start "
          f"with one of {list(DISTRIBUTIONS)}"
        )

  @property
  def uses_features(self) -> bool:
    return self.features != "none"

  def user_constant_columns(self, model_cfg: Any) -> int:
    """Trailing user-vector columns that are the constant 1 (not solved by fold-in)."""
    c = self.constant_user_columns
    return int(c(model_cfg) if callable(c) else c)

  def load(self) -> type:
    """The model class (imports its module on first use)."""
    if not isinstance(self.target, str):
      return self.target
    module, _, cls = self.target.partition(":")
    return getattr(importlib.import_module(module), cls)


_COMMON_SPACE = {
  "optimizer.learning_rate": ("log_float", 1e-4, 3e-2),
  "optimizer.sparse_learning_rate": ("log_float", 1e-4, 3e-2),
  "model.embed_dim": ("choice", (32, 64, 128)),
  "loss.l2": ("log_float", 1e-6, 1e-2),
}
_GRAPH_SPACE = {
  **_COMMON_SPACE,
  "model.num_layers": ("int", 1, 4),
  "model.reg_weight": ("log_float", 1e-6, 1e-2),
}
_MM_GRAPH_SPACE = {**_GRAPH_SPACE, "model.knn_k": ("choice", (5, 10, 20))}

# Shared by every graph model: fold-in against propagated vectors, graph left as trained.
_GRAPH_FOLDIN = (
  "implicit-ALS solve against the propagated item vectors (approximate: the graph is not updated)"
)
_RATING_SPACE = {
  "optimizer.sparse_learning_rate": ("log_float", 1e-3, 1e-1),
  "model.embed_dim": ("choice", (10, 32, 64)),
  "loss.l2": ("log_float", 1e-4, 1e-1),
}

# Pointwise rankers (regime "pointwise"): MLP width/depth, embedding width, both rates.
_RANKER_SPACE = {
  "optimizer.learning_rate": ("log_float", 1e-4, 1e-2),
  "optimizer.sparse_learning_rate": ("log_float", 1e-4, 1e-2),
  "model.embed_dim": ("choice", (8, 16, 32, 64)),
  "model.hidden_dim": ("choice", (64, 128, 256)),
  "model.num_layers": ("int", 1, 3),
}

MODELS: dict[str, ModelSpec] = {
  s.name: s
  for s in (
    ModelSpec(
      "bpr_mf",
      "mmrec_jax.models.bpr_mf:BPRMF",
      features="none",
      foldin="implicit-ALS solve against the item factors (item bias kept as an offset)",
      constant_user_columns=lambda cfg: int(bool(cfg.item_bias)),
      search_space={
        **_COMMON_SPACE,
        "input.num_negatives": ("choice", (1, 2, 4, 8)),
        "model.item_bias": ("choice", (False, True)),
      },
      reference="Rendle et al., BPR, UAI 2009",
    ),
    ModelSpec(
      "vbpr",
      "mmrec_jax.models.vbpr:VBPR",
      features="required",
      foldin="implicit-ALS solve for [gamma_u, theta_u] (bias columns kept)",
      new_items="content part of the item vector: [0, E f, beta' f, 0]",
      constant_user_columns=2,
      search_space=_COMMON_SPACE,
      reference="He & McAuley, VBPR, AAAI 2016",
    ),
    ModelSpec(
      "two_tower",
      "mmrec_jax.models.two_tower:TwoTower",
      features="optional",
      foldin="implicit-ALS solve against the item-tower vectors",
      new_items="item tower on the features, ID source absent",
      search_space={
        **_COMMON_SPACE,
        "model.hidden_dim": ("choice", (64, 128, 256)),
        "model.fusion": ("choice", ("concat", "sum", "attention", "gating")),
        "model.modality_dropout": ("float", 0.0, 0.5),
      },
      reference="Yi et al., sampling-bias-corrected two-tower, RecSys 2019",
    ),
    ModelSpec(
      "lightgcn",
      "mmrec_jax.models.lightgcn:LightGCN",
      foldin=_GRAPH_FOLDIN,
      features="none",
      regime="graph",
      paper_defaults={"reg_weight": 1e-4},
      search_space=_GRAPH_SPACE,
      reference="He et al., LightGCN, SIGIR 2020",
    ),
    ModelSpec(
      "freedom",
      "mmrec_jax.models.freedom:FREEDOM",
      foldin=_GRAPH_FOLDIN,
      features="required",
      regime="graph",
      paper_defaults={"reg_weight": 1e-4, "graph_dropout": 0.8},
      search_space={**_MM_GRAPH_SPACE, "model.graph_dropout": ("choice", (0.8, 0.9))},
      reference="Zhou & Shen, FREEDOM, ACM MM 2023",
    ),
    ModelSpec(
      "lattice",
      "mmrec_jax.models.lattice:LATTICE",
      foldin=_GRAPH_FOLDIN,
      features="required",
      regime="graph",
      paper_defaults={"reg_weight": 1e-4},
      search_space={**_MM_GRAPH_SPACE, "model.lambda_coeff": ("float", 0.5, 1.0)},
      reference="Zhang et al., LATTICE, ACM MM 2021",
    ),
    ModelSpec(
      "bm3",
      "mmrec_jax.models.bm3:BM3",
      foldin=_GRAPH_FOLDIN,
      features="required",
      regime="graph",
      paper_defaults={"reg_weight": 0.1, "graph_dropout": 0.5},
      search_space={
        **_GRAPH_SPACE,
        "model.reg_weight": ("choice", (0.1, 0.01)),
        "model.graph_dropout": ("choice", (0.3, 0.5)),
      },
      reference="Zhou et al., BM3, WWW 2023",
    ),
    ModelSpec(
      "mf",
      "mmrec_jax.models.rating_mf:BiasedMF",
      foldin="implicit-ALS solve against the item factors (bias columns kept)",
      constant_user_columns=1,
      features="none",
      regime="rating",
      search_space=_RATING_SPACE,
      reference="Koren, Bell & Volinsky, Matrix factorization, Computer 2009",
    ),
    ModelSpec(
      "pmf",
      "mmrec_jax.models.rating_mf:PMF",
      foldin="implicit-ALS solve against the item factors (bias columns kept)",
      constant_user_columns=1,
      features="none",
      regime="rating",
      search_space=_RATING_SPACE,
      reference="Salakhutdinov & Mnih, Probabilistic matrix factorization, NIPS 2007",
    ),
    ModelSpec(
      "mmgcn",
      "mmrec_jax.models.mmgcn:MMGCN",
      foldin=_GRAPH_FOLDIN,
      features="required",
      regime="graph",
      paper_defaults={"reg_weight": 1e-4},
      search_space=_GRAPH_SPACE,
      reference="Wei et al., MMGCN, ACM MM 2019",
    ),
    ModelSpec(
      "mlp_ranker",
      "mmrec_jax.models.mlp_ranker:MLPRanker",
      features="optional",
      regime="pointwise",
      search_space=_RANKER_SPACE,
      reference="NVIDIA Merlin ML-25M multi-modal ranking notebooks (MLP over concatenation)",
    ),
    ModelSpec(
      "dlrm",
      "mmrec_jax.models.dlrm:DLRM",
      features="optional",
      regime="pointwise",
      search_space=_RANKER_SPACE,
      reference="Naumov et al., DLRM, arXiv:1906.00091, 2019",
    ),
    ModelSpec(
      "dcn_v2",
      "mmrec_jax.models.dcn_v2:DCNv2",
      features="optional",
      regime="pointwise",
      search_space={**_RANKER_SPACE, "model.cross_layers": ("int", 1, 4)},
      reference="Wang et al., DCN V2, WWW 2021",
    ),
    ModelSpec(
      "deepfm",
      "mmrec_jax.models.deepfm:DeepFM",
      features="optional",
      regime="pointwise",
      search_space=_RANKER_SPACE,
      reference="Guo et al., DeepFM, IJCAI 2017",
    ),
    # Classic baselines fitted in closed form / by ALS (regime "closed_form").
    ModelSpec(
      "mostpop",
      "mmrec_jax.models.most_pop:MostPop",
      features="none",
      regime="closed_form",
      # No hyperparameters: a one-point space, so a search runs it once.
      search_space={"train.num_epochs": ("choice", (1,))},
      reference="popularity baseline (e.g. Cremonesi et al., RecSys 2010)",
    ),
    ModelSpec(
      "itemknn",
      "mmrec_jax.models.item_knn:ItemKNN",
      features="none",
      regime="closed_form",
      search_space={
        "model.num_neighbors": ("choice", (10, 20, 50, 100, 200, 400)),
        "model.shrink": ("choice", (0.0, 10.0, 50.0, 100.0)),
      },
      reference="Deng & Karypis, Item-based top-N recommendation, TOIS 2004 (RecBole ItemKNN)",
    ),
    ModelSpec(
      "ease",
      "mmrec_jax.models.ease:EASE",
      features="none",
      regime="closed_form",
      paper_defaults={"reg_weight": 500.0},
      search_space={"model.reg_weight": ("log_float", 10.0, 5000.0)},
      reference="Steck, Embarrassingly shallow autoencoders, WWW 2019",
    ),
    ModelSpec(
      "cease",
      "mmrec_jax.models.cease:CEASE",
      features="optional",
      regime="closed_form",
      paper_defaults={"reg_weight": 500.0, "content_weight": 30.0},
      search_space={
        "model.reg_weight": ("log_float", 10.0, 5000.0),
        "model.content_weight": ("log_float", 1.0, 1000.0),
        "model.cold_neighbors": ("choice", (0, 5, 10, 20)),
      },
      reference="Jeunen, Van Balen & Goethals, Closed-form models for collaborative "
      "filtering with side-information, RecSys 2020 (EASE with content rows)",
    ),
    ModelSpec(
      "ials",
      "mmrec_jax.models.ials:IALS",
      features="none",
      regime="closed_form",
      foldin="implicit-ALS solve against the item factors (iALS's own user step)",
      paper_defaults={"reg_weight": 0.01, "confidence_alpha": 40.0},
      search_space={
        "model.embed_dim": ("choice", (32, 64, 128, 256)),
        "model.reg_weight": ("log_float", 1e-3, 100.0),
        "model.confidence_alpha": ("log_float", 0.5, 100.0),
        "train.num_epochs": ("int", 5, 30),
      },
      reference="Hu, Koren & Volinsky, Collaborative filtering for implicit feedback, ICDM 2008",
    ),
  )
}


def get(name: str) -> ModelSpec:
  """The spec of ``name``; an unknown name is a one-line ConfigError listing the valid."""
  try:
    return MODELS[name]
  except KeyError:
    raise ConfigError(f"model.name={name!r} is not one of {sorted(MODELS)}") from None


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
  """Adds a model defined outside the package (``replace`` to redefine a name)."""
  if spec.name in MODELS and not replace:
    raise ConfigError(f"model {spec.name!r} is already registered")
  MODELS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes a model added with :func:`register` (tests)."""
  MODELS.pop(name, None)


def names() -> tuple[str, ...]:
  return tuple(MODELS)


def paper_default(name: str, field: str, default: float = 0.0) -> float:
  return float(get(name).paper_defaults.get(field, default))


def model_modalities(name: str, modalities: tuple[str, ...] | Any) -> tuple[str, ...]:
  """The modalities a run of ``name`` uses: none for ID-only models, else as given."""
  return tuple(modalities) if get(name).uses_features else ()
