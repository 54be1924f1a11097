"""lipsync-jax: lip-sync models, training and inference in JAX/Flax.

Packages by concern (see the README's "Where things are"): `models`, `data`,
`train`, `inference`, `evaluation`, `io` (audio, video) and `vision` (face
detection, FaceMesh, blending); `losses`, `checkpoint` / `model_dir` and
`convert` at the top. Commands: `python -m lipsync_jax.evaluate`,
`python -m lipsync_jax.demo`, `python -m lipsync_jax.convert`, and the
`train.py` / `infer.py` scripts beside the package.
"""

__version__ = "0.1.0"
