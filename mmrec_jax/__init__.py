"""mmrec_jax: multimodal recommender systems in JAX/Flax."""

__version__ = "0.1.0"
