"""lipsync-jax: lip-sync models, training and inference in JAX/Flax."""

__version__ = "0.1.0"
