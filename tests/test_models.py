"""Model zoo: parameter counts, shapes, tiny real forwards."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import models


def _zeros(*shape):
  return jnp.zeros(shape, jnp.float32)


def _abstract_init(arch: str, *args, **overrides):
  module = models.create(arch, **overrides)
  return module, jax.eval_shape(lambda: module.init(jax.random.key(0), *args))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


GEN_ARGS = (_zeros(1, 80, 16, 1), _zeros(1, 96, 96, 6))
SYNC_ARGS = (_zeros(1, 80, 16, 1), _zeros(1, 48, 96, 15))
DISC_ARGS = (_zeros(1, 96, 96, 3),)


@pytest.mark.parametrize("arch,args,params,bn_values", [
    ("wav2lip", GEN_ARGS, 36_298_035, 22_752),
    ("wav2lip_disc_qual", DISC_ARGS, 14_113_793, 0),
    ("syncnet_color", SYNC_ARGS, 16_435_072, None),
])
def test_parameter_counts(arch, args, params, bn_values):
  _, variables = _abstract_init(arch, *args)
  assert _count(variables["params"]) == params
  if bn_values is not None:  # upstream: 22,802 buffer values incl. 50 counters
    assert _count(variables.get("batch_stats", {})) == bn_values
  for leaf in jax.tree_util.tree_leaves(variables):
    assert leaf.dtype == jnp.float32


def test_generator_shapes_5d_and_4d():
  gen, variables = _abstract_init("wav2lip", *GEN_ARGS)
  out5 = jax.eval_shape(lambda v: gen.apply(v, _zeros(2, 5, 80, 16, 1), _zeros(2, 5, 96, 96, 6)),
                        variables)
  assert out5.shape == (2, 5, 96, 96, 3) and out5.dtype == jnp.float32
  out4 = jax.eval_shape(lambda v: gen.apply(v, _zeros(7, 80, 16, 1), _zeros(7, 96, 96, 6)),
                        variables)
  assert out4.shape == (7, 96, 96, 3)


@pytest.mark.parametrize("arch,args", [
    ("wav2lip", GEN_ARGS), ("syncnet_color", SYNC_ARGS), ("wav2lip_disc_qual", DISC_ARGS)])
def test_bfloat16_compute_keeps_float32_params_and_outputs(arch, args):
  module, variables = _abstract_init(arch, *args, width_multiplier=0.125, dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype("float32")}
  outs = jax.eval_shape(lambda v: module.apply(v, *args), variables)
  assert {o.dtype for o in jax.tree_util.tree_leaves(outs)} == {jnp.dtype("float32")}
  # Every convolution computes in bfloat16.
  jaxpr = str(jax.make_jaxpr(lambda v: module.apply(v, *args))(variables))
  conv_lines = [l for l in jaxpr.splitlines() if "conv_general_dilated[" in l]
  assert conv_lines and all(l.split("=")[0].count(":bf16[") >= 1 for l in conv_lines)


def test_syncnet_and_disc_shapes():
  sync, variables = _abstract_init("syncnet_color", *SYNC_ARGS)
  a, f = jax.eval_shape(lambda v: sync.apply(v, _zeros(3, 80, 16, 1), _zeros(3, 48, 96, 15)),
                        variables)
  assert a.shape == f.shape == (3, 512)
  disc, variables = _abstract_init("wav2lip_disc_qual", *DISC_ARGS)
  probs = jax.eval_shape(lambda v: disc.apply(v, _zeros(2, 5, 96, 96, 3)), variables)
  logits = jax.eval_shape(lambda v: disc.apply(v, _zeros(2, 5, 96, 96, 3), method="logits"),
                          variables)
  assert probs.shape == logits.shape == (10, 1)
  assert jax.eval_shape(lambda v: disc.apply(v, _zeros(4, 96, 96, 3)), variables).shape == (4, 1)


def test_syncnet_face_encoder_asymmetric_layer():
  """Upstream's k5 s(1,2) p1 layer turns 48x96 into 46x47."""
  sync, variables = _abstract_init("syncnet_color", *SYNC_ARGS)
  _, state = jax.eval_shape(
      lambda v: sync.apply(v, *SYNC_ARGS, capture_intermediates=True, mutable=["intermediates"]),
      variables)
  assert state["intermediates"]["face_encoder_1"]["__call__"][0].shape == (1, 46, 47, 64)


def _random_variables(module, *args, seed: int = 0):
  """He-normal conv kernels, unit BN, zero biases; shapes from eval_shape.

  A real `init` would do too, but compiling its random initialisers takes
  minutes on a small CPU.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    return rng.normal(0.0, 0.05, leaf.shape).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _fold(x):
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def test_tiny_generator_trains_and_folds_time_major():
  gen = models.create("wav2lip", width_multiplier=0.0625)
  rng = np.random.default_rng(0)
  audio = jnp.asarray(rng.normal(size=(2, 3, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(2, 3, 96, 96, 6)), jnp.float32)
  variables = _random_variables(gen, audio, faces)

  @jax.jit
  def run(variables, audio, faces):
    train = lambda a, f: gen.apply(variables, a, f, train=True, mutable=["batch_stats"])
    return train(audio, faces), train(_fold(audio), _fold(faces))

  (out, updates), (out4, updates4) = run(variables, audio, faces)
  assert out.shape == (2, 3, 96, 96, 3)
  assert bool(jnp.all((out >= 0) & (out <= 1)))
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   updates["batch_stats"], variables["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  # The 5-D call is the 4-D call on the time-major fold (BN sees the same frames).
  assert out4.shape == (6, 96, 96, 3)
  np.testing.assert_allclose(np.asarray(_fold(out)), np.asarray(out4), rtol=1e-5, atol=1e-6)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
      updates, updates4)


def test_tiny_syncnet_embeddings_unit_norm_non_negative():
  sync = models.create("syncnet_color", width_multiplier=0.0625)
  rng = np.random.default_rng(1)
  audio = jnp.asarray(rng.normal(size=(3, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(3, 48, 96, 15)), jnp.float32)
  variables = _random_variables(sync, audio, faces)
  run = jax.jit(lambda v, a, f: sync.apply(v, a, f, train=True, mutable=["batch_stats"]))
  (a, f), _ = run(variables, audio, faces)
  for emb in (a, f):
    assert emb.shape == (3, 32)
    assert bool(jnp.all(emb >= 0))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=-1), 1.0, rtol=1e-5)


def test_tiny_disc_probabilities_and_lower_half_crop():
  disc = models.create("wav2lip_disc_qual", width_multiplier=0.0625)
  rng = np.random.default_rng(2)
  faces = rng.uniform(size=(2, 3, 96, 96, 3)).astype(np.float32)
  upper_zeroed = faces.copy()
  upper_zeroed[:, :, :48] = 0.0
  variables = _random_variables(disc, jnp.asarray(faces))

  @jax.jit
  def run(variables, faces, upper_zeroed):
    return (disc.apply(variables, faces), disc.apply(variables, faces, method="logits"),
            disc.apply(variables, upper_zeroed), disc.apply(variables, faces[1, 2][None]))

  probs, logits, probs_zeroed, single = map(np.asarray, run(variables, faces, upper_zeroed))
  assert probs.shape == (6, 1)
  np.testing.assert_allclose(probs, np.asarray(jax.nn.sigmoid(logits)), rtol=1e-6)
  # Only the lower half is seen: changing the upper half changes nothing.
  np.testing.assert_array_equal(probs_zeroed, probs)
  # Time-major fold: row t*B + b.
  np.testing.assert_allclose(probs[2 * 2 + 1], single[0], rtol=1e-5)


def test_create_rejects_unknown_arch_and_bad_config():
  with pytest.raises(ValueError, match="unknown architecture 'nope'"):
    models.create("nope")
  with pytest.raises(ValueError, match="bad config"):
    models.create("wav2lip", no_such_field=1)


@pytest.mark.parametrize("arch", ["wav2lip", "lpips_attnwav2lip"])
def test_face_encoded_once_decodes_like_the_whole_generator(arch):
  """A still photo's face is encoded once (`encode_faces`, batch 1) and
  decoded for every audio window (`decode_faces` broadcasts it): the same
  frames as the whole generator on the repeated face, within float32 rounding."""
  gen = models.create(arch, width_multiplier=0.0625)
  rng = np.random.default_rng(1)
  n = 4
  mel = jnp.asarray(rng.normal(size=(n, 80, 16, 1)), jnp.float32)
  face = jnp.asarray(rng.uniform(size=(1, 96, 96, 6)), jnp.float32)
  variables = _random_variables(gen, mel, jnp.repeat(face, n, 0))
  assert models.has_face_features(gen)

  @jax.jit
  def both(variables):
    whole = models.generate_frames(gen, variables, mel, jnp.repeat(face, n, 0))
    feats = models.encode_faces(gen, variables, face)
    return whole, feats, models.decode_faces(gen, variables, mel, feats)

  whole, feats, once = both(variables)
  assert all(f.shape[0] == 1 for f in feats)
  # Batch 1 and batch n convolutions round differently; the CBAM and
  # instance-norm levels carry that to ~1e-5 (the float32 parity tolerance).
  np.testing.assert_allclose(np.asarray(once), np.asarray(whole), rtol=1e-4, atol=1e-5)
  # Not vacuous: the frames follow the audio.
  assert float(jnp.abs(whole[0] - whole[1]).max()) > 1e-3
  assert not models.has_face_features(models.create("synctalkface"))


@pytest.mark.parametrize("size,levels,bottleneck", [
    (96, 0, 6), (128, 0, 8), (192, 1, 6), (256, 1, 8)])
def test_generators_and_discriminator_at_each_face_size(size, levels, bottleneck):
  """(B, T, S, S, 6) faces -> (B, T, S, S, 3); large faces add levels so the
  U-Nets keep their bottleneck; 96 is exactly the upstream layout."""
  from lipsync_jax.models import layers
  assert layers.extra_levels(size) == levels
  audio, faces = _zeros(2, 3, 80, 16, 1), _zeros(2, 3, size, size, 6)
  counts = {}
  for arch in ("wav2lip", "lpips_attnwav2lip"):
    gen, variables = _abstract_init(arch, _zeros(1, 80, 16, 1), _zeros(1, size, size, 6),
                                    face_size=size)
    out = jax.eval_shape(lambda v, gen=gen: gen.apply(v, audio, faces), variables)
    assert out.shape == (2, 3, size, size, 3) and out.dtype == jnp.float32
    feats = jax.eval_shape(lambda v, gen=gen: gen.apply(
        v, faces[0], method="encode_faces"), variables)
    counts[arch] = _count(variables["params"])
    if arch == "wav2lip":
      assert len(feats) == 7 + levels and feats[-1].shape == (3, 1, 1, 512)
      assert feats[0].shape == (3, size, size, 16)
    else:
      assert len(feats) == 5 + levels and feats[-1].shape == (3, bottleneck, bottleneck, 512)
    with pytest.raises(ValueError, match="face_size"):
      jax.eval_shape(lambda v, gen=gen: gen.apply(v, audio, _zeros(2, 3, 64, 64, 6)), variables)
  disc, dv = _abstract_init("wav2lip_disc_qual", _zeros(1, size, size, 3), face_size=size)
  assert jax.eval_shape(lambda v: disc.apply(v, _zeros(2, 3, size, size, 3)), dv).shape == (6, 1)
  if size == 96:  # the upstream counts (test_parameter_counts, RECON for ours)
    assert counts == {"wav2lip": 36_298_035, "lpips_attnwav2lip": 20_266_933}
    assert _count(dv["params"]) == 14_113_793
  with pytest.raises(ValueError, match="face size must be one of"):
    layers.extra_levels(size + 16)


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_tiny_face_size_192_generator_runs():
  """A real forward of a tiny 192 px Wav2Lip and LPIPS-AttnWav2Lip, through
  `generate_frames` at their own size and from 96 px crops (resized)."""
  rng = np.random.default_rng(0)
  mel = jnp.asarray(rng.normal(size=(2, 80, 16, 1)), jnp.float32)
  for arch in ("wav2lip", "lpips_attnwav2lip"):
    gen = models.create(arch, width_multiplier=0.0625, face_size=192)
    faces = jnp.asarray(rng.uniform(size=(2, 192, 192, 6)), jnp.float32)
    variables = _random_variables(gen, mel, faces)
    out = jax.jit(lambda v, f, gen=gen: models.generate_frames(gen, v, mel, f))
    hi, lo = out(variables, faces), out(variables, faces[:, ::2, ::2])
    assert hi.shape == (2, 192, 192, 3) and lo.shape == (2, 96, 96, 3)
    assert bool(jnp.all(jnp.isfinite(hi))) and float(hi.std()) > 0
