"""The config schema: no key can collide with a ConfigDict attribute; renamed keys hint."""

import ml_collections

from mmrec_jax import config as config_lib


def _keys(node, prefix=""):
  for key, value in node.items():
    yield prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      yield from _keys(value, f"{prefix}{key}.")


def test_no_key_is_named_like_a_configdict_attribute():
  """``--config.x.items=`` would resolve to the ``ConfigDict.items`` method, not a key."""
  reserved = set(dir(ml_collections.ConfigDict))
  keys = list(_keys(config_lib.base_config()))
  assert len(keys) > 80
  clashes = [k for k in keys if k.split(".")[-1] in reserved]
  assert not clashes, clashes


def test_renamed_keys_point_at_existing_keys():
  cfg = config_lib.base_config()
  for old, new in config_lib.RENAMED_KEYS.items():
    section, field = new.split(".")
    assert field in cfg[section], new
    assert old.split(".")[-1] not in cfg[old.split(".")[0]]
