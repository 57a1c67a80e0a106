"""The CLIP text tower in Flax NNX: item text in the same space as CLIP image features.

Why: with the CLIP image tower (image_encoder.py) extracting item images, the CLIP text
tower puts item titles/descriptions into the *same* joint embedding space, which
multimodal recommenders can exploit (and which zero-shot baselines need). It is not a
BERT: it reproduces ``transformers.CLIPTextModel`` / ``CLIPTextModelWithProjection``:

  * token + absolute position embeddings (no LayerNorm on the embeddings);
  * pre-LayerNorm layers (transformer.PreLNLayer) with ``quick_gelu`` (config
    ``hidden_act``) under a *causal* mask combined with the padding mask;
  * ``final_layer_norm`` on every position;
  * the sentence vector is the state at the end-of-text token -- the first position
    holding ``eos_token_id``, or, for old configs whose ``eos_token_id`` is 2, the
    position of the largest token id (transformers keeps that legacy rule, so do we);
  * then ``text_projection`` (no bias) into the joint space when the checkpoint has it
    (a full ``CLIPModel`` or ``CLIPTextModelWithProjection``), else the pooled state.

text_encoder.SentenceEncoder does tokenisation (``tokenizer.json``; CLIP's adds the
start/end tokens and keeps the end token when truncating to 77), batching and the L2
normalisation CLIP features are compared with. Right padding and the causal mask mean
pad tokens never influence the end-of-text state.

Weights: ``config.json`` with ``model_type`` ``clip`` (the text tower is read from
``text_config``, ``projection_dim`` from the top level) or ``clip_text_model``, plus
safetensors with ``text_model.*`` tensors (and ``text_projection.weight``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmrec_jax.errors import DataError
from mmrec_jax.features import loading, transformer

LEGACY_EOS = 2  # configs from before transformers PR #24773: pool at argmax(ids)


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
  """Sizes and token ids of a CLIP text tower, as in Hugging Face ``config.json``."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int = 77
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"
  projection_dim: int = 0  # text_projection width; 0 = no projection
  pad_token_id: int = 1
  eos_token_id: int = 49407
  model_type: str = "clip_text_model"

  family = "clip_text"

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "config.json") -> CLIPTextConfig:
    model_type = d.get("model_type", "")
    if model_type == "clip":  # full CLIPModel: text tower nested in text_config
      proj = d.get("projection_dim", 512)
      d = dict(d.get("text_config") or {})
      d["projection_dim"] = proj
    elif model_type != "clip_text_model":
      raise DataError(
        where,
        f"model_type {model_type!r} is not a CLIP text tower; expected clip or clip_text_model",
      )
    try:
      cfg = cls(
        vocab_size=int(d.get("vocab_size", 49408)),
        hidden_size=int(d.get("hidden_size", 512)),
        num_layers=int(d.get("num_hidden_layers", 12)),
        num_heads=int(d.get("num_attention_heads", 8)),
        intermediate_size=int(d.get("intermediate_size", 2048)),
        max_position_embeddings=int(d.get("max_position_embeddings", 77)),
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-5)),
        hidden_act=str(d.get("hidden_act", "quick_gelu")),
        projection_dim=int(d.get("projection_dim", 0) or 0),
        pad_token_id=int(d.get("pad_token_id", 1) or 0),
        eos_token_id=int(d.get("eos_token_id", 49407)),
        model_type=model_type,
      )
    except (TypeError, ValueError) as e:
      raise DataError(where, f"bad text tower config value ({e})") from None
    if cfg.hidden_size % cfg.num_heads:
      raise DataError(
        where,
        f"hidden_size {cfg.hidden_size} is not divisible by num_attention_heads {cfg.num_heads}",
      )
    transformer.activation(cfg.hidden_act, where)
    return cfg

  @property
  def max_tokens(self) -> int:
    return self.max_position_embeddings

  @property
  def output_dim(self) -> int:
    return self.projection_dim or self.hidden_size


class CLIPTextEncoder(nnx.Module):
  """Token ids -> final-LayerNorm states ``[b, n, h]``; :meth:`pool` -> ``[b, dim]``."""

  def __init__(self, cfg: CLIPTextConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    h = cfg.hidden_size
    emb = functools.partial(nnx.Embed, features=h, dtype=dtype, rngs=rngs)
    self.token = emb(cfg.vocab_size)
    self.position = emb(cfg.max_position_embeddings)
    self.layers = nnx.List(
      [
        transformer.PreLNLayer(
          h, cfg.intermediate_size, cfg.num_heads, cfg.layer_norm_eps, cfg.hidden_act, dtype, rngs
        )
        for _ in range(cfg.num_layers)
      ]
    )
    self.final_ln = nnx.LayerNorm(h, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
    self.proj = (
      nnx.Linear(h, cfg.projection_dim, use_bias=False, dtype=dtype, rngs=rngs)
      if cfg.projection_dim
      else None
    )
    self.eos_token_id = cfg.eos_token_id

  def __call__(
    self, ids: jax.Array, mask: jax.Array, type_ids: jax.Array | None = None
  ) -> jax.Array:
    del type_ids
    n = ids.shape[1]
    x = self.token(ids) + self.position(jnp.arange(n)[None, :])
    causal = jnp.arange(n)[None, :] <= jnp.arange(n)[:, None]  # [q, k]
    allowed = causal[None, None] & (mask[:, None, None, :] > 0)  # [b, 1, q, k]
    bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)
    for layer in self.layers:
      x = layer(x, bias)
    return self.final_ln(x)

  def eos_index(self, ids: jax.Array) -> jax.Array:
    """``[b]`` position of the end-of-text token (transformers' rule, module docstring)."""
    if self.eos_token_id == LEGACY_EOS:
      return jnp.argmax(ids, axis=-1)
    return jnp.argmax((ids == self.eos_token_id).astype(jnp.int32), axis=-1)

  def pool(self, x: jax.Array, ids: jax.Array) -> jax.Array:
    """The end-of-text state of each row, projected when the checkpoint has a projection."""
    pooled = x[jnp.arange(x.shape[0]), self.eos_index(ids)]
    return self.proj(pooled) if self.proj is not None else pooled


def convert_clip_text(
  state: dict[str, np.ndarray], cfg: CLIPTextConfig, where: str
) -> dict[str, Any]:
  """``CLIPModel`` / ``CLIPTextModel(WithProjection)`` tensors -> module params."""
  proj = state.get("text_projection.weight")
  state = loading.strip_prefix(
    state, "embeddings.token_embedding.weight", ("text_model.", "model.text_model.")
  )
  t = loading.TensorSource(state, where)
  h, f = cfg.hidden_size, cfg.intermediate_size
  out: dict[str, Any] = {
    "token": {"embedding": t.get("embeddings.token_embedding.weight", (cfg.vocab_size, h))},
    "position": {
      "embedding": t.get("embeddings.position_embedding.weight", (cfg.max_position_embeddings, h))
    },
    "final_ln": t.layer_norm("final_layer_norm", h),
    "layers": {},
  }
  if cfg.projection_dim:
    if proj is None:
      raise DataError(
        where, "config has projection_dim but the checkpoint has no text_projection.weight"
      )
    if proj.shape != (cfg.projection_dim, h):
      raise DataError(
        where, f"text_projection.weight has shape {proj.shape}, expected {(cfg.projection_dim, h)}"
      )
    out["proj"] = {"kernel": np.asarray(proj).T}
  for i in range(cfg.num_layers):
    p = f"encoder.layers.{i}."
    out["layers"][i] = {
      "ln1": t.layer_norm(p + "layer_norm1", h),
      "ln2": t.layer_norm(p + "layer_norm2", h),
      "query": t.linear(p + "self_attn.q_proj", h, h),
      "key": t.linear(p + "self_attn.k_proj", h, h),
      "value": t.linear(p + "self_attn.v_proj", h, h),
      "attn_out": t.linear(p + "self_attn.out_proj", h, h),
      "fc1": t.linear(p + "mlp.fc1", h, f),
      "fc2": t.linear(p + "mlp.fc2", f, h),
    }
  if t.has(f"encoder.layers.{cfg.num_layers}.self_attn.q_proj.weight"):
    raise DataError(
      where, f"checkpoint has more layers than num_hidden_layers={cfg.num_layers} in config.json"
    )
  return out


def load_clip_text(
  model_dir: os.PathLike | str, dtype: Any = jnp.float32, *, projection: bool = True
) -> tuple[CLIPTextEncoder, CLIPTextConfig]:
  """Reads ``config.json`` + safetensors into a :class:`CLIPTextEncoder`.

  ``projection=False`` drops ``text_projection`` (features = pooled end-of-text state);
  so does a ``CLIPTextModel`` checkpoint, whose config names a ``projection_dim`` but
  which has no projection tensor.
  """
  model_dir = pathlib.Path(model_dir)
  where = str(model_dir)
  cfg = CLIPTextConfig.from_dict(
    loading.read_json(model_dir / "config.json"), str(model_dir / "config.json")
  )
  state = loading.load_state_dict(model_dir)
  if cfg.projection_dim and (not projection or "text_projection.weight" not in state):
    cfg = dataclasses.replace(cfg, projection_dim=0)
  params = convert_clip_text(state, cfg, where)
  model = loading.fill_module(
    lambda: CLIPTextEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)), params, where
  )
  return model, cfg
