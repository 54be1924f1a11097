"""The model zoo. Every model is a `flax.linen.Module` working in NHWC.

    gen = lipsync_jax.models.create("wav2lip")                # full size
    tiny = lipsync_jax.models.create("lpips_attnwav2lip", width_multiplier=0.125)
    hq = lipsync_jax.models.create("wav2lip", face_size=192)   # 192x192 faces

`face_size` (wav2lip, lpips_attnwav2lip, wav2lip_disc_qual): 96 (the default,
upstream's layout), 128, 192, 256, 384 or 512; larger faces add U-Net levels
(`layers.extra_levels`).

Architectures (see `ARCHS`):
  wav2lip            upstream generator, audio (B,T,80,16,1) + faces (B,T,96,96,6) -> (B,T,96,96,3)
  lpips_attnwav2lip  our main generator, same inputs and outputs
  syncnet_color      lip-sync expert, audio (B,80,16,1) + faces (B,48,96,15) -> 2 x (B,512)
  wav2lip_disc_qual  visual-quality discriminator, faces (B,T,96,96,3) -> (B*T,1)
  syncnet_original   the original SyncNet scorer (MFCC + 224x224 mouth crops), for metrics
  lip_sync           landmark sync expert, audio (B,80,16,1) + lips (B,5,40,2) -> 2 x (B,128)
  lip_sync_pixels    the same behind a lip regressor: audio + faces (B,48,96,15) -> 2 x (B,128)
  synctalkface       SyncTalkFace (Audio-Lip Memory), Wav2Lip's inputs at 96x96, sigmoid;
                     with lip windows (B,T,5,96,96,3) it also returns the training outputs
  synctalkface_paper the same at 128x128 with tanh, pixels in [-1, 1] (the authors' code)
  au_tcn             audio + AU driven generator with TCN self-attention fusion;
                     mode="inpaint" (Wav2Lip's inputs) or "one_shot" (identity (B,96,96,3))
  audio_to_au        its audio-to-AU module alone, audio (B,T,80,16,1) -> AU features, logits
  au_classifier      AU loss network, lower-half crops (N,48,96,3) -> (N,K) AU logits
  audio_to_lips      two-stage model, stage 1: mel context (N,80,32,1) + neutral lips
                     (N,40,2) -> lips (N,40,2)
  lip_renderer       two-stage model, stage 2: lips (B,T,40,2) + faces (B,T,96,96,6)
                     -> (B,T,96,96,3); see inference/two_stage.py for both together
"""

from __future__ import annotations

import functools
import importlib

import flax.linen as nn
import jax

# arch name -> (module path, class name)
ARCHS: dict[str, tuple[str, str]] = {
    "wav2lip": ("lipsync_jax.models.wav2lip", "Wav2Lip"),
    "lpips_attnwav2lip": ("lipsync_jax.models.lpips_attnwav2lip", "LPIPSAttnWav2Lip"),
    "syncnet_color": ("lipsync_jax.models.syncnet", "SyncNetColor"),
    "wav2lip_disc_qual": ("lipsync_jax.models.discriminator", "Wav2LipDiscQual"),
    # The original SyncNet (Chung & Zisserman), a scorer for LSE-D/LSE-C only.
    "syncnet_original": ("lipsync_jax.models.syncnet_original", "SyncNetOriginal"),
    # The landmark sync expert: FaceMesh lip points + mel (data-efficient).
    "lip_sync": ("lipsync_jax.models.lip_sync", "LipSyncNet"),
    # ... behind a pixel-to-lips regressor: the expert a generator trains against.
    "lip_sync_pixels": ("lipsync_jax.models.lip_sync", "LipSyncPixels"),
    # Variants (variants.md): SyncTalkFace and the AU-driven TCN generator.
    "synctalkface": ("lipsync_jax.models.synctalkface", "SyncTalkFace"),
    "synctalkface_paper": ("lipsync_jax.models.synctalkface", "SyncTalkFacePaper"),
    "au_tcn": ("lipsync_jax.models.au_tcn", "AUTCN"),
    "audio_to_au": ("lipsync_jax.models.au_tcn", "AudioToAU"),
    "au_classifier": ("lipsync_jax.models.au_tcn", "AUClassifier"),
    # The two-stage real-face model: audio -> lip landmarks -> renderer.
    "audio_to_lips": ("lipsync_jax.models.audio_to_lips", "AudioToLips"),
    "lip_renderer": ("lipsync_jax.models.lip_renderer", "LipRenderer"),
}

GENERATORS = ("wav2lip", "lpips_attnwav2lip")
# Generators with their own training inputs and outputs (lip windows, AU
# features, dropout). The trainer handles them per model family
# (train/steps.py); inference goes through `generate_frames`.
VARIANT_GENERATORS = ("synctalkface", "synctalkface_paper", "au_tcn")
ALL_GENERATORS = GENERATORS + VARIANT_GENERATORS


def frames_per_call(module: nn.Module) -> int:
  """Batches given to `generate_frames` must be a multiple of this: au_tcn
  generates windows of consecutive frames (its `seq_len`, or the 5 frames it
  is trained on); the others generate every frame on its own (1)."""
  from lipsync_jax.models import au_tcn  # pylint: disable=import-outside-toplevel
  if isinstance(module, au_tcn.AUTCN):
    return int(module.seq_len or 5)
  return 1


def pixel_maps(module: nn.Module):
  """(to_model, to_unit): [0, 1] images <-> the module's `pixel_range`
  ([0, 1] unless it says otherwise, e.g. [-1, 1] for the tanh presets)."""
  lo, hi = getattr(module, "pixel_range", (0.0, 1.0))
  if (lo, hi) == (0.0, 1.0):
    return (lambda x: x), (lambda x: x)
  return (lambda x: lo + (hi - lo) * x), (lambda x: (x - lo) / (hi - lo))


def generate_frames(module: nn.Module, variables, mel: jax.Array, faces: jax.Array) -> jax.Array:
  """Any generator under Wav2Lip's inference contract (jit-friendly).

  Args:
    module: a generator of `ALL_GENERATORS`.
    variables: its {"params", "batch_stats"}.
    mel: (N, 80, 16, 1) per-frame mel windows.
    faces: (N, H, W, 6) [0, 1] masked target + reference, consecutive frames
      for au_tcn (N a multiple of `frames_per_call`).
  Returns:
    (N, H, W, 3) float32 in [0, 1].

  Handles each model's pixel range ([-1, 1] for the tanh presets) and face
  size (a 128 px model gets the crops resized to 128 and its output resized
  back); au_tcn sees N / w windows of w consecutive frames (in one_shot mode
  identity = the window's first reference frame).
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import au_tcn  # pylint: disable=import-outside-toplevel
  n, h, w = faces.shape[:3]
  size = face_size_of(module) or h
  x = faces.astype(jnp.float32)
  if (h, w) != (size, size):
    x = jax.image.resize(x, (n, size, size, 6), "linear")
  to_model, to_unit = pixel_maps(module)
  x = to_model(x)
  if isinstance(module, au_tcn.AUTCN):
    t = frames_per_call(module)
    if n % t:
      raise ValueError(f"au_tcn generates windows of {t} frames; got a batch of {n}")
    a = mel.reshape((n // t, t) + mel.shape[1:])
    f = x.reshape((n // t, t) + x.shape[1:])
    if module.mode == "one_shot":
      f = f[:, 0, ..., 3:]
    out = module.apply(variables, a, f, train=False).reshape((n, size, size, 3))
  else:
    out = module.apply(variables, mel, x, train=False)
  out = to_unit(out.astype(jnp.float32))
  if (h, w) != (size, size):
    out = jax.image.resize(out, (n, h, w, 3), "linear")
  return jnp.clip(out, 0.0, 1.0)


def face_size_of(module: nn.Module) -> int | None:
  """The side of the square faces `module` takes (`face_size`, or
  `image_size` for the SyncTalkFace presets), or None if any size will do."""
  size = getattr(module, "image_size", None) or getattr(module, "face_size", None)
  return int(size) if size else None


def has_face_features(module: nn.Module) -> bool:
  """Whether `module` splits into an audio-independent face encoder and an
  audio-driven decoder (`encode_faces` / `decode_faces`): Wav2Lip and
  LPIPS-AttnWav2Lip do; the variants (memory, AU windows) do not."""
  return all(callable(getattr(module, m, None)) for m in ("encode_faces", "decode_faces"))


def encode_faces(module: nn.Module, variables, faces: jax.Array):
  """The face half of `generate_frames` (jit-friendly).

  Args:
    module: a generator with `has_face_features(module)`.
    variables: its {"params", "batch_stats"}.
    faces: (N, H, W, 6) [0, 1] masked target + reference.
  Returns:
    A tuple of feature maps, each with leading axis N, for `decode_faces`.
  """
  return module.apply(variables, faces.astype(jax.numpy.float32), train=False,
                      method="encode_faces")


def decode_faces(module: nn.Module, variables, mel: jax.Array, feats) -> jax.Array:
  """The audio half of `generate_frames`: mel (N, 80, 16, 1) + `encode_faces`
  features with leading axis N or 1 (one face for every window) ->
  (N, H, W, 3) float32 in [0, 1], equal to `generate_frames` on the same faces
  within float32 rounding."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  out = module.apply(variables, mel, feats, train=False, method="decode_faces")
  return jnp.clip(out.astype(jnp.float32), 0.0, 1.0)


def model_class(arch: str) -> type[nn.Module]:
  if arch not in ARCHS:
    raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
  module, name = ARCHS[arch]
  return getattr(importlib.import_module(module), name)


def create(arch: str, **config_overrides) -> nn.Module:
  """Builds model `arch`; keyword arguments override its config fields."""
  cls = model_class(arch)
  try:
    return cls(**config_overrides)
  except TypeError as e:
    raise ValueError(f"bad config for {arch!r}: {e}") from None


def init_variables(module: nn.Module, seed, *example_inputs, **kwargs) -> dict:
  """Initial variables of `module` for `example_inputs`, compiled cheaply.

  Flax's `init` under `jax.jit` lowers one threefry generator per parameter,
  and at XLA's default optimisation level the CPU backend spends minutes
  compiling that for these networks. Init runs once, so it is compiled at
  XLA's lowest backend optimisation level, which is several times faster to
  compile; the values are those of `module.init` with the same key.

  Args:
    module: the model.
    seed: an int or a JAX PRNG key.
    *example_inputs: inputs of the shapes to initialise for.
    **kwargs: static keyword arguments of the module's `__call__` (`train`).
  """
  key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
  init = jax.jit(functools.partial(module.init, **kwargs))
  compiled = init.lower(key, *example_inputs).compile(
      compiler_options={"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True})
  return compiled(key, *example_inputs)
