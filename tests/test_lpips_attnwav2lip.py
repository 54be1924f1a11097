"""LPIPS-AttnWav2Lip generator and its CBAM / FFC / AdaIN blocks."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import flax

from lipsync_jax.models import create
from lipsync_jax.models.attention import AdaIN, CBAM, FFC, ResCBAM
from lipsync_jax.models.lpips_attnwav2lip import DecoderLevel, LPIPSAttnWav2Lip, UPSAMPLERS

# The real forward/backward passes use a 3-level, 1/8-width model on 16x16
# faces (S divisible by 2**(levels-1)): compiling the full 5-level graph takes
# minutes on a small shared CPU. The default structure is checked with
# eval_shape.
S = 16
TINY = dict(width_multiplier=0.125, encoder_widths=(32, 64, 128))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _inputs(b, t, size=S, seed=0):
  rng = np.random.default_rng(seed)
  audio = rng.standard_normal((b, t, 80, 16, 1)).astype(np.float32)
  faces = rng.random((b, t, size, size, 6), dtype=np.float32)
  return jnp.asarray(audio), jnp.asarray(faces)


def _randomize_adain(params, key, scale=0.5):
  """Replaces every AdaIN gamma/beta kernel with random values."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  for i, path in enumerate(sorted(flat)):
    if "adain" in path and path[-1] == "kernel":
      flat[path] = scale * jax.random.normal(jax.random.fold_in(key, i), flat[path].shape)
  return flax.traverse_util.unflatten_dict(flat)


def _numpy_init(module, *args, seed=0):
  """Variables shaped by `module.init(key, *args)` (via eval_shape), numpy-filled.

  Compiling `init` (its threefry RNG) costs far more CPU than the forward
  pass on these tiny models, so the tests draw the values directly:
  kernels N(0, 1/fan_in), biases 0, BN scale 1, running var 1, and the AdaIN
  linears zero as in the real init (AdaIN's own init is tested separately).
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(k, "key", str(k)) for k in path]
    if "adain" in names or names[-1] in ("bias", "mean"):
      return np.zeros(leaf.shape, np.float32)
    if names[-1] in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
  """(model, variables, step): step(variables, audio, faces, target) is a jitted
  train-mode forward + backward returning (loss, out, new batch_stats, grads)."""
  model = create("lpips_attnwav2lip", **TINY)
  audio, faces = _inputs(1, 2)
  variables = _numpy_init(model, audio, faces)

  # Backend optimisation off: this compile dominates the file's run time and
  # the tiny model runs in milliseconds either way.
  @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
  def step(variables, audio, faces, target):
    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 audio, faces, train=True, mutable=["batch_stats"])
      return jnp.mean(jnp.abs(out - target)), (out, updates["batch_stats"])

    (loss, (out, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"])
    return loss, out, stats, grads

  return model, variables, step


def test_default_param_count_matches_recon_table():
  model = create("lpips_attnwav2lip")
  audio = jax.ShapeDtypeStruct((1, 80, 16, 1), jnp.float32)
  faces = jax.ShapeDtypeStruct((1, 96, 96, 6), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), audio, faces)["params"]
  assert _count(params) == 20_266_933
  parts = {"audio": 0, "encoder": 0, "sam": 0, "decoder": 0, "out": 0}
  for name, sub in params.items():
    parts[name.split("_")[0]] += _count(sub)
  # upstream.md §5.3 RECON breakdown.
  assert parts == {"audio": 2_812_672, "encoder": 7_914_506, "sam": 4_329_984,
                   "decoder": 5_209_672, "out": 99}
  # Nearest x2 + conv has the transposed conv's 3x3 kernel and bias.
  resize = create("lpips_attnwav2lip", decoder_upsample="resize")
  resize_params = jax.eval_shape(resize.init, jax.random.key(0), audio, faces)["params"]
  assert jax.tree.map(lambda x: x.shape, resize_params) == jax.tree.map(
      lambda x: x.shape, params)


def test_decoder_upsample_resize_draws_no_checkerboard():
  """A flat input through a decoder level: the stride-2 transposed conv gives
  the four pixels of each 2x2 block their own kernel taps, a period-2
  pattern (the dotted mouths of issue 18); nearest x2 + conv keeps it flat.
  Checked away from the zero-padded border, whose effect spreads inwards."""
  x = jnp.ones((1, 16, 16, 8))
  skip = jnp.ones((1, 32, 32, 8))
  audio = jnp.zeros((1, 16))
  spread = {}
  for upsample in UPSAMPLERS:
    level = DecoderLevel(8, use_adain=False, upsample=upsample)
    variables = _numpy_init(level, x, skip, audio, seed=3)
    out = np.asarray(jax.jit(level.apply)(variables, x, skip, audio))[0, 8:-8, 8:-8]
    phases = out.reshape(8, 2, 8, 2, 8).mean(axis=(0, 2))   # (2, 2, C) phase means
    spread[upsample] = float(np.ptp(phases.reshape(4, 8), axis=0).max())
    # Per channel, the only variation is from pixel to pixel within a 2x2 block.
    assert out.std(axis=(0, 1)).max() <= spread[upsample] + 1e-5
  assert spread["transpose"] > 1e-2
  assert spread["resize"] < 1e-5
  with pytest.raises(ValueError, match="decoder_upsample"):
    model = create("lpips_attnwav2lip", decoder_upsample="bicubic", **TINY)
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, S, S, 6)))


def test_eval_shapes_5d_and_4d():
  model = LPIPSAttnWav2Lip()
  f32 = jnp.float32
  a5 = jax.ShapeDtypeStruct((2, 5, 80, 16, 1), f32)
  f5 = jax.ShapeDtypeStruct((2, 5, 96, 96, 6), f32)
  variables = jax.eval_shape(model.init, jax.random.key(0), a5, f5)
  out5 = jax.eval_shape(model.apply, variables, a5, f5)
  assert out5.shape == (2, 5, 96, 96, 3) and out5.dtype == f32
  a4 = jax.ShapeDtypeStruct((7, 80, 16, 1), f32)
  f4 = jax.ShapeDtypeStruct((7, 96, 96, 6), f32)
  assert jax.eval_shape(model.apply, variables, a4, f4).shape == (7, 96, 96, 3)
  # bf16 compute keeps float32 params and a float32 output.
  bf = LPIPSAttnWav2Lip(dtype=jnp.bfloat16)
  v_bf = jax.eval_shape(bf.init, jax.random.key(0), a4, f4)
  assert {x.dtype for x in jax.tree.leaves(v_bf["params"])} == {jnp.dtype(f32)}
  assert jax.eval_shape(bf.apply, v_bf, a4, f4).dtype == f32
  # The SAM's bottleneck is 6x6 at 96x96.
  bottleneck = jax.eval_shape(
      lambda v, f: model.apply(v, f, method=lambda m, f: m.encode(f)[-1]), variables, f4)
  assert bottleneck.shape == (7, 6, 6, 512)


def test_bad_inputs_raise():
  model = LPIPSAttnWav2Lip(**TINY)
  with pytest.raises(ValueError, match="6 channels"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, S, S, 3)))
  with pytest.raises(ValueError, match="not divisible"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 80, 16, 1)),
                   jnp.zeros((1, 18, 18, 6)))
  with pytest.raises(ValueError, match="same \\(B, T\\)"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 80, 16, 1)),
                   jnp.zeros((1, 2, S, S, 6)))


def _target(seed=2):
  return jnp.asarray(np.random.default_rng(seed).random((1, 2, S, S, 3), dtype=np.float32))


def test_tiny_forward_and_grad_are_finite(tiny):
  model, variables, step = tiny
  audio, faces = _inputs(1, 2, seed=1)
  loss, out, stats, grads = step(variables, audio, faces, _target())
  assert out.shape == (1, 2, S, S, 3) and out.dtype == jnp.float32
  assert np.isfinite(float(loss))
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(grads))
  # Every part of the face path gets a gradient, and so do the zero-initialised
  # AdaIN linears (d loss / d gamma kernel = a * d loss / d gamma != 0) ...
  for name, sub in grads.items():
    if name != "audio_encoder":
      assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(sub)) > 0, name
  for i in range(len(TINY["encoder_widths"]) - 1):
    assert float(jnp.abs(grads[f"decoder_{i}"]["adain"]["gamma"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["sam"]["adain"]["beta"]["kernel"]).max()) > 0
  # ... while the audio encoder gets none until they move: audio enters only
  # through AdaIN.
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(grads["audio_encoder"])) == 0
  # BN running statistics were updated.
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(stats)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_audio_changes_output_only_through_adain(tiny):
  model, variables, step = tiny
  audio, faces = _inputs(1, 2, seed=4)
  other_audio, _ = _inputs(1, 2, seed=5)
  target = _target()
  # At init the AdaIN linears are zero: the output ignores the audio.
  out1 = step(variables, audio, faces, target)[1]
  out2 = step(variables, other_audio, faces, target)[1]
  np.testing.assert_allclose(np.asarray(out1), np.asarray(out2), atol=1e-6)
  # With non-zero AdaIN weights, different audio gives a different output, and
  # now the audio encoder is trained too.
  v = dict(variables, params=_randomize_adain(variables["params"], jax.random.key(1)))
  _, out1, _, grads = step(v, audio, faces, target)
  out2 = step(v, other_audio, faces, target)[1]
  assert float(jnp.abs(out1 - out2).max()) > 1e-3
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(grads["audio_encoder"])) > 0
  # The audio embedding path is exposed on its own.
  emb = jax.eval_shape(lambda v, a: model.apply(v, a, method=LPIPSAttnWav2Lip.embed_audio),
                       variables, audio[:, 0])
  assert emb.shape == (1, 64)


def _instance_norm(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  mu = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5)


def test_adain_starts_as_instance_norm_then_follows_audio():
  rng = np.random.default_rng(6)
  x = rng.standard_normal((2, 5, 4, 8)).astype(np.float32) * 3 + 1
  a = rng.standard_normal((2, 16)).astype(np.float32)
  block = AdaIN(8)
  params = block.init(jax.random.key(0), x, a)["params"]
  np.testing.assert_allclose(np.asarray(block.apply({"params": params}, x, a)),
                             _instance_norm(x), atol=1e-5)
  params = _randomize_adain({"adain": params}, jax.random.key(2))["adain"]
  params["beta"]["bias"] = jnp.ones_like(params["beta"]["bias"])
  out1 = np.asarray(block.apply({"params": params}, x, a))
  out2 = np.asarray(block.apply({"params": params}, x, -a))
  gamma = a @ np.asarray(params["gamma"]["kernel"])
  beta = a @ np.asarray(params["beta"]["kernel"]) + 1.0
  expected = (1 + gamma[:, None, None, :]) * _instance_norm(x) + beta[:, None, None, :]
  np.testing.assert_allclose(out1, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(out1 - out2).max() > 1e-2


def test_ffc_any_spatial_size():
  ffc = FFC(12, ratio_global=0.5)
  # Shapes for odd and even sizes (the irfft2 gets s=(H, W) back).
  for hw in [(6, 6), (3, 9), (7, 5)]:
    x = jax.ShapeDtypeStruct((2, *hw, 8), jnp.float32)
    v = jax.eval_shape(ffc.init, jax.random.key(0), x)
    assert jax.eval_shape(ffc.apply, v, x).shape == (2, *hw, 12)
  # Values and gradients for an odd size.
  x = jnp.asarray(np.random.default_rng(7).standard_normal((2, 7, 5, 8)), jnp.float32)
  variables = _numpy_init(ffc, x)

  @jax.jit
  def run(variables):
    def f(params):
      y, _ = ffc.apply(dict(variables, params=params), x, train=True,
                       mutable=["batch_stats"])
      return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape))), y
    return jax.value_and_grad(f, has_aux=True)(variables["params"])

  (_, y), g = run(variables)
  assert y.shape == (2, 7, 5, 12)
  assert float(y.min()) >= 0  # both branches end in ReLU
  assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree.leaves(g))
  # The spectral branch is wired in and receives gradient.
  assert float(jnp.abs(g["spectral"]["fourier"]["conv"]["kernel"]).max()) > 0
  # ratio 0: no spectral branch at all (a plain conv-BN-ReLU).
  local = jax.eval_shape(FFC(8, ratio_global=0.0).init, jax.random.key(0), x)["params"]
  assert set(local) == {"local_to_local", "bn_local"}


def test_ffc_bf16_runs_fft_in_float32():
  x = jnp.asarray(np.random.default_rng(8).standard_normal((1, 5, 7, 8)), jnp.float32)
  variables = _numpy_init(FFC(8), x)
  both = jax.jit(lambda v, x: (FFC(8, dtype=jnp.bfloat16).apply(v, x), FFC(8).apply(v, x)))
  y, ref = both(variables, x)
  assert y.dtype == jnp.bfloat16 and np.isfinite(np.asarray(y, np.float32)).all()
  np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref), atol=0.1, rtol=0.05)


def test_cbam_maps_in_unit_interval_and_rescbam_shape():
  x = jnp.asarray(np.random.default_rng(9).standard_normal((2, 6, 5, 32)) * 4, jnp.float32)
  cbam = CBAM(reduction=16, kernel_size=7)
  variables = _numpy_init(cbam, x)
  # Channel MLP 32 -> 2 -> 32 and a 7x7 2->1 conv, no biases.
  assert _count(variables["params"]) == 2 * 32 * 2 + 7 * 7 * 2
  block = ResCBAM(32)
  v_block = _numpy_init(block, x, seed=1)

  @jax.jit
  def run(variables, v_block):
    y, state = cbam.apply(variables, x, mutable=["intermediates"])
    return y, state["intermediates"], block.apply(v_block, x)

  y, inter, out = run(variables, v_block)
  ch = np.asarray(inter["channel"]["attention"][0])
  sp = np.asarray(inter["spatial"]["attention"][0])
  assert ch.shape == (2, 1, 1, 32) and sp.shape == (2, 6, 5, 1)
  for m in (ch, sp):
    assert m.min() >= 0 and m.max() <= 1 and m.std() > 0
  np.testing.assert_allclose(np.asarray(y), np.asarray(x) * ch * sp, rtol=1e-5, atol=1e-5)
  assert out.shape == x.shape and float(out.min()) >= 0


def _mean_logit(model, variables, audio, faces):
  out = np.asarray(model.apply(variables, audio, faces), np.float64)
  return np.log(out / (1 - out)).mean(axis=(1, 2))   # (N, 3) per-image mean logit


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_decoder_adain_before_skip_lets_the_face_colours_through():
  """After the fuse, the last level's instance norm leaves the 1x1 output conv
  per-channel mean-zero features: every image's mean logit is the out bias,
  whatever the face's colours (the grey-lips bug). Before the skip, the
  encoder's features reach the output un-normalised and the mean follows the
  face."""
  audio, faces = _inputs(4, 1, seed=7)
  audio, faces = audio[:, 0], faces[:, 0]
  # Four faces that differ in tint, as the demo's identities do.
  faces = faces * jnp.asarray([1.0, 0.5, 0.8, 1.2])[:, None, None, None]
  means = {}
  for position in ("after_fuse", "before_skip"):
    model = create("lpips_attnwav2lip", decoder_adain=position, **TINY)
    variables = _numpy_init(model, audio, faces)
    means[position] = _mean_logit(model, variables, audio, faces)
  np.testing.assert_allclose(means["after_fuse"], 0.0, atol=1e-5)   # the out bias
  assert np.ptp(means["before_skip"], axis=0).min() > 1e-2
  with pytest.raises(ValueError, match="decoder_adain"):
    model = create("lpips_attnwav2lip", decoder_adain="nowhere", **TINY)
    jax.eval_shape(model.init, jax.random.key(0), audio, faces)


def test_model_files_keep_the_decoder_options_they_were_trained_with(tmp_path):
  from lipsync_jax import checkpoint
  model = create("lpips_attnwav2lip", **TINY)
  audio, faces = _inputs(1, 1)
  variables = _numpy_init(model, audio[:, 0], faces[:, 0])
  checkpoint.save_model(tmp_path / "new", "lpips_attnwav2lip", TINY, variables)
  loaded = checkpoint.load_model(str(tmp_path / "new"))
  assert loaded.config["decoder_adain"] == "before_skip" == loaded.module.decoder_adain
  assert loaded.config["decoder_upsample"] == "transpose" == loaded.module.decoder_upsample
  # A file written before the fields existed has no entries: it was trained
  # with AdaIN after the fuse and transposed convs, and is read that way.
  meta_path = tmp_path / "new" / "lipsync_meta.json"
  meta = json.loads(meta_path.read_text())
  del meta["config"]["decoder_adain"], meta["config"]["decoder_upsample"]
  meta_path.write_text(json.dumps(meta))
  module = checkpoint.load_model(str(tmp_path / "new")).module
  assert (module.decoder_adain, module.decoder_upsample) == ("after_fuse", "transpose")
  # A resize model's file says so.
  resize = create("lpips_attnwav2lip", decoder_upsample="resize", **TINY)
  checkpoint.save_model(tmp_path / "resize", "lpips_attnwav2lip",
                        {**TINY, "decoder_upsample": "resize"},
                        _numpy_init(resize, audio[:, 0], faces[:, 0]))
  assert checkpoint.load_model(str(tmp_path / "resize")).module.decoder_upsample == "resize"
