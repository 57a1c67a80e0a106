"""Test-session setup: 8 fake CPU devices so sharding is exercised on any machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest


@pytest.fixture(autouse=True)
def _absl_logger_level_per_test():
  """Each test starts with absl's logger at NOTSET, so ``caplog`` decides what is captured.

  Whatever sets absl verbosity (parsing absl flags in-process, ``set_verbosity`` in a test)
  would otherwise leak into later tests of the same xdist worker and hide their INFO
  records, making log assertions depend on test order.
  """
  from absl import logging as absl_logging

  logger = absl_logging.get_absl_logger()
  before = logger.level
  logger.setLevel(0)
  yield
  logger.setLevel(before)
