"""Generator families: how each kind of generator runs inside the train step.

The train and eval steps (`steps.py`) know one interface, `GeneratorFamily`:

    family = family_of(gen)                       # looked up by module class
    paths, parts, new_stats = family.forward(variables, batch, faces, gt,
                                             frozen, train=True, rng=rng)

* `paths`: the generated frames (B, T, 96, 96, 3) in [0, 1] of each decoding
  path, the inference path first. The step scores every path with the shared
  losses (L1, sync, LPIPS, GAN); eval reports the first.
* `parts`: the family's own loss parts (`store`, `align`, `vv`, `a2au`,
  `au`...), weighted by `steps.combine_generator_losses` like the rest.
* `new_stats`: the new BatchNorm statistics in train mode, else None.

The families:
* `OnePathFamily`: Wav2Lip, LPIPS-AttnWav2Lip and every generator with
  Wav2Lip's call `gen(audio, faces)` and no extra losses (the default).
* `SyncTalkFaceFamily`: key and value decoding paths, the memory's store and
  alignment losses, visual-visual sync through a frozen lip encoder.
* `AUTCNFamily`: windows of frames, one-shot or inpainting, the audio-to-AU
  loss and (with an AU classifier) the AU consistency loss.
* `LipRendererFamily`: the two-stage model's renderer, driven by the target
  frames' true lips (`batch["lips"]`) instead of audio.

A new generator kind registers its family with `register_family`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipsync_jax import losses
from lipsync_jax import models
from lipsync_jax.models import au_tcn
from lipsync_jax.models import lip_renderer
from lipsync_jax.models import synctalkface

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]


def to_unit(x: Array) -> Array:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return x.astype(jnp.float32) / 255.0


def apply_module(module: nn.Module, variables: Any, *args, train: bool, rng: Array, **kw):
  """`module.apply` in train mode (BN batch stats out, dropout rng) or eval
  mode. Returns (output, new batch_stats or None)."""
  if train:
    out, upd = module.apply(variables, *args, train=True, mutable=["batch_stats"],
                            rngs={"dropout": rng}, **kw)
    return out, upd["batch_stats"]
  return module.apply(variables, *args, train=False, **kw), None


@dataclasses.dataclass(frozen=True)
class GeneratorFamily:
  """A generator module and how it trains; see the module docstring."""
  gen: nn.Module
  name = "generator"

  def forward(self, variables: Any, batch: Batch, faces: Array, gt: Array,
              frozen: dict[str, Any], train: bool, rng: Array
              ) -> tuple[tuple[Array, ...], Metrics, Any]:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class OnePathFamily(GeneratorFamily):
  """`gen(audio (B,T,80,16,1), faces (B,T,96,96,6)) -> (B,T,96,96,3)`."""
  name = "wav2lip"

  def forward(self, variables, batch, faces, gt, frozen, train, rng):
    pred, stats = apply_module(self.gen, variables, batch["audio"], faces, train=train, rng=rng)
    return (pred.astype(jnp.float32),), {}, stats


@dataclasses.dataclass(frozen=True)
class SyncTalkFaceFamily(GeneratorFamily):
  """Audio-Lip Memory: needs `batch["context"]` (B,T+2c,96,96,3) for its lip
  windows."""
  name = "synctalkface"

  def forward(self, variables, batch, faces, gt, frozen, train, rng):
    gen = self.gen
    to_model, to_unit_range = models.pixel_maps(gen)
    lip = synctalkface.lip_windows(to_model(to_unit(batch["context"])), gen.lip_window,
                                   gen.mask_value)
    out, stats = apply_module(gen, variables, batch["audio"], to_model(faces), lip,
                              train=train, rng=rng)
    paths = (to_unit_range(out.images), to_unit_range(out.value_images))
    parts = {"store": losses.memory_store_loss(out.value_recall, out.lip_query),
             "align": losses.memory_alignment_kl(out.lip_address, out.audio_address)}
    # Visual-visual sync: the generated window through a frozen copy of the
    # lip encoder (stop-gradient weights, BN batch stats discarded), the
    # ground-truth window of the same frames through the trained one.
    real_w = synctalkface.mask_upper_half(to_model(gt), gen.mask_value)
    real_emb, _ = apply_module(gen, variables, real_w, train=train, rng=rng,
                               method="encode_lip")
    frozen_vars = dict(variables, params=jax.lax.stop_gradient(variables["params"]))
    for name, img in zip(("vv", "vv_value"), paths):
      fake_w = synctalkface.mask_upper_half(to_model(img), gen.mask_value)
      fake_emb, _ = apply_module(gen, frozen_vars, fake_w, train=train, rng=rng,
                                 method="encode_lip")
      parts[name] = losses.visual_sync_loss(fake_emb, real_emb)
    return paths, parts, stats


@dataclasses.dataclass(frozen=True)
class AUTCNFamily(GeneratorFamily):
  """AU-driven TCN. `au_classifier` (frozen variables in
  `frozen["au_classifier"]`) enables the AU consistency loss; AU labels in
  the batch (`aus`, `au_valid`) enable the audio-to-AU loss."""
  au_classifier: nn.Module | None = None
  name = "au_tcn"

  def forward(self, variables, batch, faces, gt, frozen, train, rng):
    gen = self.gen
    to_model, to_unit_range = models.pixel_maps(gen)
    # one_shot: the whole face from one identity image, the reference's
    # first frame (channels 3-5).
    inputs = faces if gen.mode == "inpaint" else faces[:, 0, ..., 3:]
    out, stats = apply_module(gen, variables, batch["audio"], to_model(inputs), train=train,
                              rng=rng, return_aux=True)
    pred = to_unit_range(out.images)
    parts = {}
    if "aus" in batch:
      parts["a2au"] = losses.masked_bce_with_logits(out.au_logits, batch["aus"],
                                                    batch["au_valid"])
    if self.au_classifier is not None:
      cls_vars = frozen["au_classifier"]
      lower = lambda x: x[:, :, x.shape[2] // 2:]
      fake_logits = self.au_classifier.apply(cls_vars, lower(pred), train=False)
      real_logits = self.au_classifier.apply(cls_vars, lower(gt), train=False)
      parts["au"] = losses.au_consistency_loss(fake_logits, real_logits)
    return (pred,), parts, stats


@dataclasses.dataclass(frozen=True)
class LipRendererFamily(GeneratorFamily):
  """`gen(lips (B,T,40,2), faces (B,T,S,S,6))`: needs `batch["lips"]`
  (`data.options.with_lips`). It never reads audio, so it trains with no
  expert and no sync loss (reconstruction, LPIPS and GAN only)."""
  name = "lip_renderer"

  def forward(self, variables, batch, faces, gt, frozen, train, rng):
    pred, stats = apply_module(self.gen, variables, batch["lips"], faces, train=train, rng=rng)
    return (pred.astype(jnp.float32),), {}, stats


_FAMILIES: dict[type, Callable[..., GeneratorFamily]] = {
    synctalkface.SyncTalkFace: SyncTalkFaceFamily,
    au_tcn.AUTCN: AUTCNFamily,
    lip_renderer.LipRenderer: LipRendererFamily,
}


def register_family(module_class: type, factory: Callable[..., GeneratorFamily]) -> None:
  """Trains modules of `module_class` (and its subclasses) with `factory(gen, **kw)`."""
  _FAMILIES[module_class] = factory


def family_of(gen: nn.Module, **kw) -> GeneratorFamily:
  """The family of a generator module: the registered factory of the nearest
  class in its MRO, else `OnePathFamily`. `kw` (e.g. `au_classifier`) goes to
  families that take it."""
  for klass in type(gen).__mro__:
    if klass in _FAMILIES:
      factory = _FAMILIES[klass]
      fields = ({f.name for f in dataclasses.fields(factory)}
                if dataclasses.is_dataclass(factory) else set(kw))
      return factory(gen, **{k: v for k, v in kw.items() if k in fields})
  return OnePathFamily(gen)
