"""The model zoo. Every model is a `flax.linen.Module` working in NHWC.

    gen = lipsync_jax.models.create("wav2lip")                # full size
    tiny = lipsync_jax.models.create("lpips_attnwav2lip", width_multiplier=0.125)

Architectures (see `ARCHS`):
  wav2lip            upstream generator, audio (B,T,80,16,1) + faces (B,T,96,96,6) -> (B,T,96,96,3)
  lpips_attnwav2lip  our main generator, same inputs and outputs
  syncnet_color      lip-sync expert, audio (B,80,16,1) + faces (B,48,96,15) -> 2 x (B,512)
  wav2lip_disc_qual  visual-quality discriminator, faces (B,T,96,96,3) -> (B*T,1)
  syncnet_original   the original SyncNet scorer (MFCC + 224x224 mouth crops), for metrics
  synctalkface       SyncTalkFace (Audio-Lip Memory), Wav2Lip's inputs at 96x96, sigmoid;
                     with lip windows (B,T,5,96,96,3) it also returns the training outputs
  synctalkface_paper the same at 128x128 with tanh, pixels in [-1, 1] (the authors' code)
  au_tcn             audio + AU driven generator with TCN self-attention fusion;
                     mode="inpaint" (Wav2Lip's inputs) or "one_shot" (identity (B,96,96,3))
  audio_to_au        its audio-to-AU module alone, audio (B,T,80,16,1) -> AU features, logits
  au_classifier      AU loss network, lower-half crops (N,48,96,3) -> (N,K) AU logits
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
    # Variants (variants.md): SyncTalkFace and the AU-driven TCN generator.
    "synctalkface": ("lipsync_jax.models.synctalkface", "SyncTalkFace"),
    "synctalkface_paper": ("lipsync_jax.models.synctalkface", "SyncTalkFacePaper"),
    "au_tcn": ("lipsync_jax.models.au_tcn", "AUTCN"),
    "audio_to_au": ("lipsync_jax.models.au_tcn", "AudioToAU"),
    "au_classifier": ("lipsync_jax.models.au_tcn", "AUClassifier"),
}

GENERATORS = ("wav2lip", "lpips_attnwav2lip")
# Generators with their own inputs or training outputs (lip windows, AU
# features, dropout): not (yet) handled by the generic trainer and inference.
VARIANT_GENERATORS = ("synctalkface", "synctalkface_paper", "au_tcn")


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
