"""Loss functions against independent references (PyTorch, closed forms)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lipsync_jax import losses
from lipsync_jax import lpips as lpips_lib
from lipsync_jax.train import steps


def test_bce_matches_torch_including_log_clamp():
  p = np.array([0.0, 1e-50, 0.2, 0.5, 0.9, 1.0, 1.0, 0.0], np.float32)
  y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0], np.float32)
  want = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y)).item()
  got = float(losses.bce(jnp.asarray(p), jnp.asarray(y)))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # p = 0 with label 1 costs exactly the clamp, 100.
  assert float(losses.bce(jnp.zeros(3), 1.0)) == pytest.approx(100.0)
  # The gradient at the clamp is finite too.
  g = jax.grad(lambda q: losses.bce(q, 1.0))(jnp.array([0.0, 0.5]))
  assert np.all(np.isfinite(np.asarray(g)))


def test_bce_with_logits_matches_torch_and_prob_version():
  z = np.linspace(-30, 30, 13).astype(np.float32)
  y = (np.arange(13) % 2).astype(np.float32)
  want = F.binary_cross_entropy_with_logits(torch.from_numpy(z), torch.from_numpy(y)).item()
  np.testing.assert_allclose(float(losses.bce_with_logits(z, y)), want, rtol=1e-6)
  zm = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32)  # moderate: same as BCE(sigmoid)
  np.testing.assert_allclose(float(losses.bce_with_logits(zm, y[4:9])),
                             float(losses.bce(jax.nn.sigmoid(zm), y[4:9])), rtol=1e-5)


def test_lower_half_stack_layout():
  x = np.random.default_rng(0).random((2, 5, 96, 96, 3)).astype(np.float32)
  out = np.asarray(losses.lower_half_stack(jnp.asarray(x)))
  assert out.shape == (2, 48, 96, 15)
  for t in range(5):
    for c in range(3):
      np.testing.assert_array_equal(out[..., 3 * t + c], x[:, t, 48:, :, c])
  # Same as upstream's torch.cat([x[:, :, i] for i in range(T)], dim=1) in NCHW.
  xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3)[:, :, :, 48:]  # (B,3,T,48,96)
  ref = torch.cat([xt[:, :, i] for i in range(5)], dim=1).permute(0, 2, 3, 1)
  np.testing.assert_array_equal(out, ref.numpy())


def test_sync_loss_is_bce_of_cosine_on_lower_halves():
  rng = np.random.default_rng(1)
  gen = rng.random((3, 5, 96, 96, 3)).astype(np.float32)
  audio = rng.normal(size=(3, 80, 16, 1)).astype(np.float32)
  seen = {}

  def fake_expert(a, v):
    seen["a"], seen["v"] = a.shape, v.shape
    # a deterministic function of the inputs, like an expert
    ae = jnp.abs(a.reshape(a.shape[0], -1)[:, :8]) + 0.1
    ve = jnp.abs(v.reshape(v.shape[0], -1)[:, :8]) + 0.1
    return ae, ve

  loss, cos = losses.sync_loss(fake_expert, jnp.asarray(gen), jnp.asarray(audio))
  assert seen == {"a": (3, 80, 16, 1), "v": (3, 48, 96, 15)}
  ae = np.abs(audio.reshape(3, -1)[:, :8]) + 0.1
  ve = np.abs(np.asarray(losses.lower_half_stack(gen)).reshape(3, -1)[:, :8]) + 0.1
  want_cos = (ae * ve).sum(1) / np.linalg.norm(ae, axis=1) / np.linalg.norm(ve, axis=1)
  np.testing.assert_allclose(np.asarray(cos), want_cos, rtol=1e-5)
  np.testing.assert_allclose(float(loss), -np.log(want_cos).mean(), rtol=1e-5)
  # Only the lower half matters.
  gen2 = gen.copy()
  gen2[:, :, :48] = 0
  loss2, _ = losses.sync_loss(fake_expert, jnp.asarray(gen2), jnp.asarray(audio))
  assert float(loss2) == float(loss)


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_sync_loss_of_a_192px_generator_goes_through_a_differentiable_resize():
  """A 192 px generator is judged by the 96 px expert on its resized frames,
  and the sync loss's gradient reaches the generator's parameters."""
  from lipsync_jax import models
  rng = np.random.default_rng(2)

  def random_variables(module, *args):
    # eval_shape + numpy: compiling `init`'s random initialisers is the slow part.
    def fill(path, leaf):
      if path[-1].key in ("scale", "var"):
        return np.ones(leaf.shape, np.float32)
      fan_in = max(1, int(np.prod(leaf.shape[:-1])))
      return rng.normal(0, np.sqrt(2 / fan_in), leaf.shape).astype(np.float32)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
    return jax.tree_util.tree_map_with_path(fill, shapes)

  expert = models.create("syncnet_color", width_multiplier=0.0625)
  ev = random_variables(expert, jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 48, 96, 15)))
  expert_apply = lambda a, v: expert.apply(ev, a, v)
  gen = models.create("wav2lip", width_multiplier=0.0625, face_size=192)
  mel = jnp.asarray(rng.normal(size=(2, 5, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(2, 5, 192, 192, 6)), jnp.float32)
  audio = jnp.asarray(rng.normal(size=(2, 80, 16, 1)), jnp.float32)
  gv = random_variables(gen, mel[0], faces[0])

  def loss_of(params):
    out = gen.apply({**gv, "params": params}, mel, faces)   # (2, 5, 192, 192, 3)
    return losses.sync_loss(expert_apply, out, audio)[0]

  loss, grads = jax.jit(jax.value_and_grad(loss_of))(gv["params"])
  norms = [float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads)]
  assert np.isfinite(float(loss)) and all(np.isfinite(norms))
  # The gradient reaches every level, the full-resolution ones included.
  assert float(sum(jnp.abs(g).sum() for g in jax.tree_util.tree_leaves(
      grads["face_decoder_blocks_7_0"]))) > 0
  assert float(sum(jnp.abs(g).sum() for g in jax.tree_util.tree_leaves(
      grads["output_block_1"]))) > 0
  # The same as scoring frames resized by hand; 96 px frames are not touched.
  frames = jnp.asarray(rng.uniform(size=(2, 5, 192, 192, 3)), jnp.float32)
  small = jax.image.resize(frames, (2, 5, 96, 96, 3), "linear", antialias=True)
  np.testing.assert_allclose(float(losses.sync_loss(expert_apply, frames, audio)[0]),
                             float(losses.sync_loss(expert_apply, small, audio)[0]), rtol=1e-6)
  assert losses.resize_faces(small, 96) is small


def test_syncnet_loss_plain_and_learned_scale():
  a = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  v = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  y = jnp.array([1.0, 0.0])
  loss, cos = losses.syncnet_loss(a, v, y)
  np.testing.assert_allclose(np.asarray(cos), [1.0, 0.8], rtol=1e-6)
  np.testing.assert_allclose(float(loss), (0.0 - np.log(0.2)) / 2, rtol=1e-5)
  loss_s, _ = losses.syncnet_loss(a, v, y, jnp.float32(10.0), jnp.float32(-5.0))
  z = np.array([5.0, 3.0])
  want = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor([1.0, 0.0])).item()
  np.testing.assert_allclose(float(loss_s), want, rtol=1e-5)


def test_gan_losses_match_torch():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(6, 1)).astype(np.float32), rng.normal(size=(6, 1)).astype(np.float32)
  bce = lambda z, t: F.binary_cross_entropy(torch.sigmoid(torch.from_numpy(z)),
                                            torch.full((6, 1), t)).item()
  np.testing.assert_allclose(float(losses.gan_generator_loss(fake)), bce(fake, 1.0), rtol=1e-5)
  np.testing.assert_allclose(float(losses.gan_discriminator_loss(real, fake)),
                             bce(real, 1.0) + bce(fake, 0.0), rtol=1e-5)


def test_lpips_term_is_frozen_and_differentiable_in_images():
  params = jax.tree_util.tree_map(jnp.asarray, lpips_lib.load_lpips_params("alexnet"))
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.random((1, 2, 64, 64, 3)).astype(np.float32))
  y = jnp.asarray(rng.random((1, 2, 64, 64, 3)).astype(np.float32))
  fn = jax.jit(lambda p, a, b: losses.lpips_loss(   # jitted: op by op is 4x slower
      lambda u, w: lpips_lib.lpips_distance(p, u, w, "alexnet"), a, b))
  assert float(fn(params, x, x)) == pytest.approx(0.0, abs=1e-6)
  d = float(fn(params, x, y))
  assert d > 0.01
  g_params, g_x = jax.jit(jax.grad(fn, argnums=(0, 1)))(params, x, y)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_params))
  assert float(jnp.abs(g_x).max()) > 0


def test_generator_loss_weighting_is_upstream():
  parts = {"l1": jnp.float32(0.2), "sync": jnp.float32(0.7), "gan_g": jnp.float32(0.9),
           "lpips": jnp.float32(0.4)}
  cfg = ml_collections.ConfigDict({"l1": 1.0, "l1_complement": True, "lpips": 0.1, "gan": 0.07})
  total = float(steps.combine_generator_losses(parts, jnp.float32(0.03), cfg))
  want = 0.03 * 0.7 + 0.07 * 0.9 + (1 - 0.03 - 0.07) * 0.2 + 0.1 * 0.4
  assert total == pytest.approx(want, rel=1e-6)
  cfg.l1_complement = False
  cfg.l1 = 2.0
  total = float(steps.combine_generator_losses(parts, jnp.float32(0.0), cfg))
  assert total == pytest.approx(2.0 * 0.2 + 0.07 * 0.9 + 0.1 * 0.4, rel=1e-6)


def test_all_finite():
  assert bool(losses.all_finite({"a": jnp.float32(1.0), "b": jnp.ones(3)}))
  assert not bool(losses.all_finite({"a": jnp.float32(1.0), "b": jnp.array([1.0, jnp.nan])}))


def test_in_batch_sync_loss_matches_torch_cross_entropy():
  """Symmetric InfoNCE over the in-sync rows, against torch's cross_entropy."""
  rng = np.random.default_rng(0)
  a = np.abs(rng.normal(size=(6, 8))).astype(np.float32)
  v = np.abs(rng.normal(size=(6, 8))).astype(np.float32)
  label = np.array([1, 0, 1, 1, 0, 1], np.float32)
  scale = 7.0
  got = float(losses.in_batch_sync_loss(jnp.asarray(a), jnp.asarray(v),
                                        jnp.asarray(label), jnp.float32(scale)))
  ta = F.normalize(torch.from_numpy(a), dim=-1)
  tv = F.normalize(torch.from_numpy(v), dim=-1)
  logits = scale * ta @ tv.T
  pos = torch.from_numpy(label).bool()
  idx = torch.arange(6)
  want = 0.5 * (F.cross_entropy(logits[pos], idx[pos])
                + F.cross_entropy(logits.T[pos], idx[pos]))
  np.testing.assert_allclose(got, float(want), rtol=1e-5)
  # No in-sync sample: nothing to contrast, zero loss (not NaN).
  zero = losses.in_batch_sync_loss(jnp.asarray(a), jnp.asarray(v), jnp.zeros(6), scale)
  assert float(zero) == 0.0


def test_in_batch_sync_loss_rewards_matching_pairs():
  eye = jnp.eye(4)
  ones = jnp.ones(4)
  matched = float(losses.in_batch_sync_loss(eye, eye, ones, 20.0))
  shuffled = float(losses.in_batch_sync_loss(eye, eye[::-1], ones, 20.0))
  assert matched < 1e-6 < 10.0 < shuffled


def test_mouth_crops_are_centred_on_the_lips_and_kept_in_the_frame():
  s = 16
  img = jnp.arange(s * s, dtype=jnp.float32).reshape(1, 1, s, s, 1)
  img = jnp.concatenate([img, img], axis=1)                     # (B=1, T=2, S, S, 1)
  lips = jnp.stack([jnp.full((40, 2), 0.5).at[:, 1].set(0.75),  # centre x 8, y 12
                    jnp.full((40, 2), 0.98)])[None]             # near the corner
  crops = losses.mouth_crops(img, lips, window=0.5)
  assert crops.shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(crops[0, ..., 0], img[0, 0, 8:16, 4:12, 0])
  np.testing.assert_array_equal(crops[1, ..., 0], img[0, 1, 8:16, 8:16, 0])   # clamped


def test_mouth_loss_sees_the_mouth_and_not_the_rest_of_the_face():
  rng = np.random.default_rng(0)
  face = jnp.asarray(rng.random((1, 1, 32, 32, 3)).astype(np.float32))
  lips = jnp.full((1, 1, 40, 2), 0.5).at[..., 1].set(0.75)     # mouth rows 16..31, cols 8..23
  off_mouth = face.at[:, :, :8].set(0.0)
  on_mouth = face.at[:, :, 20:26, 12:20].set(0.0)
  assert float(losses.mouth_loss(off_mouth, face, lips)) == 0.0
  on = float(losses.mouth_loss(on_mouth, face, lips))
  want = float(jnp.abs(face[:, :, 20:26, 12:20]).sum()) / (16 * 16 * 3)
  assert on == pytest.approx(want, rel=1e-5)
  # The whole-face L1 gives the same error a quarter of the weight.
  assert float(losses.l1(on_mouth, face)) == pytest.approx(on / 4, rel=1e-5)
