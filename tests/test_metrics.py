"""Tests of lipsync_jax.evaluation.metrics and the original-SyncNet scorer."""

from __future__ import annotations

import warnings
import zlib

import jax
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import skimage.metrics

from lipsync_jax.evaluation import metrics
from lipsync_jax.models import syncnet_original

# -----------------------------------------------------------------------------
# LSE machinery.
# -----------------------------------------------------------------------------


def _code(t: int, dim: int = 32) -> np.ndarray:
  """A fixed random unit vector per integer t (distinct for every t)."""
  v = np.random.default_rng(1000 + t).normal(size=dim)
  return (v / np.linalg.norm(v)).astype(np.float32)


class ShiftedCodeScorer:
  """Audio window t embeds to code(t); video window t to code(t + shift).

  So video window t matches audio window t + shift: the audio lags by `shift`.
  """
  name = "shifted_code"
  face_size = 8

  def __init__(self, shift: int):
    self.shift = shift

  def video_windows(self, faces):
    return np.arange(faces.shape[0] - 4)

  def audio_windows(self, audio, starts, fps):
    return np.asarray(starts)

  def embed_video(self, windows):
    return np.stack([_code(int(t) + self.shift) for t in windows])

  def embed_audio(self, windows):
    return np.stack([_code(int(t)) for t in windows])


@pytest.mark.parametrize("shift", [3, -5, 0])
def test_offset_recovery(shift):
  scorer = ShiftedCodeScorer(shift)
  assert isinstance(scorer, metrics.SyncScorer)
  faces = np.zeros((60, 8, 8, 3), np.uint8)
  r = metrics.sync_scores(scorer, faces, metrics.ClipAudio(wav=np.zeros(16000, np.float32)),
                         fps=25.0)
  assert r.offset == shift
  assert r.scorer == "shifted_code"
  assert r.mean_dists.shape == (2 * metrics.VSHIFT + 1,)
  assert r.frame_conf.shape == (56,)
  # At the right shift most windows match exactly (distance ~0); the rest meet
  # the zero padding or an unrelated code.
  assert r.lse_d == pytest.approx(r.mean_dists.min())
  assert r.lse_d < 0.2
  assert r.lse_c > 0.8


def _reference_lse(v: np.ndarray, a: np.ndarray, vshift: int):
  """syncnet_python's calc_pdist + evaluate, written out with loops."""
  n = v.shape[0]
  a_pad = np.concatenate([np.zeros((vshift, a.shape[1])), a, np.zeros((vshift, a.shape[1]))])
  d = np.zeros((n, 2 * vshift + 1))
  for i in range(n):
    for j in range(2 * vshift + 1):
      d[i, j] = np.linalg.norm(v[i] - a_pad[i + j] + 1e-6)
  mean = d.mean(0)
  j = int(np.argmin(mean))
  med = np.sort(mean)[(len(mean) - 1) // 2]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)   # n < 9: zero-padded, as scipy documents
    fconf = scipy.signal.medfilt(med - d[:, j], 9)
  return mean[j], med - mean[j], vshift - j, fconf


@pytest.mark.parametrize("n,vshift", [(40, 15), (7, 15), (12, 3)])
def test_lse_matches_reference_loops(n, vshift):
  rng = np.random.default_rng(n)
  v = rng.uniform(0, 1, (n, 16)).astype(np.float32)
  a = rng.uniform(0, 1, (n, 16)).astype(np.float32)
  r = metrics.lse_from_embeddings(v, a, "x", vshift=vshift)
  lse_d, lse_c, sp_offset, fconf = _reference_lse(v.astype(np.float64), a.astype(np.float64), vshift)
  np.testing.assert_allclose(r.lse_d, lse_d, rtol=1e-5)
  np.testing.assert_allclose(r.lse_c, lse_c, rtol=1e-4, atol=1e-6)
  assert r.offset == -sp_offset   # our sign: audio lag; syncnet_python's is the opposite
  np.testing.assert_allclose(r.frame_conf, fconf, rtol=1e-4, atol=1e-5)


def test_lse_exclude_padding_averages_inside_windows_only():
  rng = np.random.default_rng(3)
  n, vshift = 20, 15
  v = rng.uniform(0, 1, (n, 8)).astype(np.float32)
  a = rng.uniform(0, 1, (n, 8)).astype(np.float32)
  r = metrics.lse_from_embeddings(v, a, vshift=vshift, padding="exclude")
  ref = np.full(2 * vshift + 1, np.inf)
  for j in range(2 * vshift + 1):
    ds = [np.linalg.norm(v[i] - a[i + j - vshift] + 1e-6)
          for i in range(n) if 0 <= i + j - vshift < n]
    if ds:
      ref[j] = np.mean(ds)
  np.testing.assert_allclose(r.mean_dists, ref, rtol=1e-5)
  assert r.lse_d == pytest.approx(ref.min(), rel=1e-5)
  assert r.offset == int(np.argmin(ref)) - vshift
  with pytest.raises(metrics.MetricError, match="padding"):
    metrics.lse_from_embeddings(v, a, padding="nope")


def test_lse_rejects_bad_shapes():
  with pytest.raises(metrics.MetricError):
    metrics.lse_from_embeddings(np.zeros((4, 8)), np.zeros((5, 8)))
  with pytest.raises(metrics.MetricError):
    metrics.lse_from_embeddings(np.zeros((0, 8)), np.zeros((0, 8)))


def test_mean_ci95():
  r = metrics.mean_ci95([1.0, 2.0, 3.0, None, float("nan")])
  assert r["n"] == 3 and r["mean"] == pytest.approx(2.0)
  # t(0.975, 2) = 4.3027; sd = 1; half = 4.3027 / sqrt(3)
  assert r["ci95"][1] - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
  assert metrics.mean_ci95([])["mean"] is None


# -----------------------------------------------------------------------------
# PSNR / SSIM against scikit-image.
# -----------------------------------------------------------------------------

def _clip():
  rng = np.random.default_rng(0)
  base = rng.uniform(0, 255, (4, 48, 48, 3))
  smooth = scipy.ndimage.gaussian_filter(base, sigma=(0, 3, 3, 0))
  return np.clip(smooth * 2 - 128 + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _sk(a, b):
  a = a.astype(np.float64) / 255
  b = b.astype(np.float64) / 255
  p = [skimage.metrics.peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)]
  s = [skimage.metrics.structural_similarity(
      x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False) for x, y in zip(a, b)]
  return np.array(p), np.array(s)


def test_psnr_ssim_against_itself():
  clip = _clip()
  with np.errstate(divide="ignore"):
    p_ref, s_ref = _sk(clip, clip)
  assert np.all(np.isinf(p_ref))
  assert np.all(np.isinf(np.asarray(metrics.psnr(clip, clip))))
  np.testing.assert_allclose(np.asarray(metrics.ssim(clip, clip)), s_ref, atol=1e-6)
  np.testing.assert_allclose(s_ref, 1.0)


def test_psnr_ssim_against_blurred_copy():
  clip = _clip()
  blurred = np.stack([scipy.ndimage.gaussian_filter(f.astype(np.float32), (1.2, 1.2, 0))
                      for f in clip]).round().astype(np.uint8)
  p_ref, s_ref = _sk(blurred, clip)
  p = np.asarray(metrics.psnr(blurred, clip))
  s = np.asarray(metrics.ssim(blurred, clip))
  np.testing.assert_allclose(p, p_ref, rtol=1e-4)
  np.testing.assert_allclose(s, s_ref, atol=2e-4)
  assert s_ref.max() < 0.99 and p_ref.max() < 60      # really degraded
  out = metrics.reconstruction_metrics(blurred, clip, None)
  assert out["psnr"] == pytest.approx(p_ref.mean(), rel=1e-4)
  assert out["ssim"] == pytest.approx(s_ref.mean(), abs=2e-4)


# -----------------------------------------------------------------------------
# Original SyncNet: converter parity with a PyTorch re-implementation.
# -----------------------------------------------------------------------------

def _torch_syncnet(embed_dim: int):
  import torch  # pylint: disable=import-outside-toplevel
  nn = torch.nn

  def block(conv, c):
    return [conv, nn.BatchNorm2d(c) if isinstance(conv, nn.Conv2d) else nn.BatchNorm3d(c),
            nn.ReLU()]

  class S(nn.Module):
    """syncnet_python's `S`, rebuilt from its public description (same keys)."""

    def __init__(self):
      super().__init__()
      c2 = nn.Conv2d
      self.netcnnaud = nn.Sequential(
          *block(c2(1, 64, 3, 1, 1), 64), nn.MaxPool2d(1, 1),
          *block(c2(64, 192, 3, 1, 1), 192), nn.MaxPool2d(3, (1, 2)),
          *block(c2(192, 384, 3, 1, 1), 384),
          *block(c2(384, 256, 3, 1, 1), 256),
          *block(c2(256, 256, 3, 1, 1), 256), nn.MaxPool2d(3, 2),
          *block(c2(256, 512, (5, 4), 1, 0), 512))
      c3 = nn.Conv3d
      self.netcnnlip = nn.Sequential(
          *block(c3(3, 96, (5, 7, 7), (1, 2, 2), 0), 96), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
          *block(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256),
          nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
          *block(c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256),
          *block(c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256),
          *block(c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), 256),
          nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
          *block(c3(256, 512, (1, 6, 6), 1, 0), 512))
      head = lambda: nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                   nn.Linear(512, embed_dim))
      self.netfcaud = head()
      self.netfclip = head()

    def forward_aud(self, x):
      return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x):
      return self.netfclip(self.netcnnlip(x).flatten(1))

  return S()


def _fill(key: str, shape) -> np.ndarray:
  """The project's reproducible weight fill (../shared/baseline/README.md)."""
  rng = np.random.default_rng(zlib.crc32(key.encode()))
  if key.endswith("running_var"):
    a = rng.uniform(0.5, 1.5, shape)
  elif key.endswith("running_mean"):
    a = rng.normal(0.0, 0.1, shape)
  elif key.endswith("bias"):
    a = rng.normal(0.0, 0.05, shape)
  elif len(shape) == 1:
    a = rng.uniform(0.8, 1.2, shape)
  else:
    a = rng.normal(0.0, 1.0, shape) * np.sqrt(1.0 / np.prod(shape[1:]))
  return a.astype(np.float32)


def test_original_syncnet_converter_parity():
  import torch  # pylint: disable=import-outside-toplevel
  net = _torch_syncnet(embed_dim=1024).eval()
  sd = net.state_dict()
  filled = {k: torch.from_numpy(_fill(k, tuple(v.shape))) if v.is_floating_point() else v
            for k, v in sd.items()}
  net.load_state_dict(filled)

  rng = np.random.default_rng(0)
  frames = rng.uniform(0, 255, (2, 5, 224, 224, 3)).astype(np.float32)
  mfcc = rng.normal(0, 5, (2, 13, 20, 1)).astype(np.float32)
  with torch.no_grad():
    ref_v = net.forward_lip(torch.from_numpy(frames.transpose(0, 4, 1, 2, 3))).numpy()
    ref_a = net.forward_aud(torch.from_numpy(mfcc.transpose(0, 3, 1, 2))).numpy()

  # The converter takes keys with a `module.` prefix and without the
  # num_batches_tracked buffers too.
  stripped = {"module." + k: v for k, v in filled.items()
              if not k.endswith("num_batches_tracked")}
  variables = syncnet_original.convert_state_dict(filled)
  model = syncnet_original.SyncNetOriginal(embed_dim=syncnet_original.embed_dim_of(stripped))
  a, v = model.apply(variables, mfcc, frames)
  assert a.shape == (2, 1024) and v.shape == (2, 1024)
  np.testing.assert_allclose(np.asarray(v), ref_v, atol=2e-4 * np.abs(ref_v).max())
  np.testing.assert_allclose(np.asarray(a), ref_a, atol=2e-4 * np.abs(ref_a).max())
  jax.tree.map(np.testing.assert_array_equal, variables,
               syncnet_original.convert_state_dict(stripped))
  n_params = sum(int(np.prod(x.shape)) for k, x in sd.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  conv_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert conv_params == n_params


def test_original_syncnet_converter_rejects_other_dicts():
  with pytest.raises(ValueError, match="syncnet_python"):
    syncnet_original.convert_state_dict({"face_encoder_blocks.0.0.conv_block.0.weight": np.zeros(1)})


def test_mfcc_windows_shapes_and_alignment():
  wav = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
  feats = syncnet_original.mfcc(wav)
  assert feats.shape[0] == 13 and abs(feats.shape[1] - 200) <= 1
  w = syncnet_original.mfcc_windows(feats, 46, 25.0)
  assert w.shape == (46, 13, 20, 1)
  np.testing.assert_array_equal(w[10, :, :, 0], feats[:, 40:60])     # 4 steps per frame
  np.testing.assert_array_equal(w[-1, :, -1, 0], feats[:, -1])       # clamped at the end


def test_original_syncnet_scorer_from_released_file(tmp_path):
  """A syncnet_python state dict file becomes a scorer whose windows and
  embeddings match the PyTorch forward."""
  import torch  # pylint: disable=import-outside-toplevel
  net = _torch_syncnet(embed_dim=1024).eval()
  net.load_state_dict({k: torch.from_numpy(_fill(k, tuple(v.shape))) if v.is_floating_point()
                       else v for k, v in net.state_dict().items()})
  path = tmp_path / "syncnet_v2.model"
  torch.save(net.state_dict(), path)

  scorer = metrics.load_scorer(str(path), batch_size=8)
  assert isinstance(scorer, metrics.OriginalSyncNetScorer)
  assert scorer.name == "syncnet_original:syncnet_v2.model" and scorer.face_size == 224
  rng = np.random.default_rng(0)
  faces = rng.integers(0, 256, (7, 224, 224, 3), dtype=np.uint8)
  wav = rng.normal(0, 0.1, 16000).astype(np.float32)
  audio = metrics.ClipAudio(wav=wav)
  v = scorer.video_windows(faces)
  a = scorer.audio_windows(audio, np.arange(v.shape[0]), 25.0)
  assert v.shape == (3, 5, 224, 224, 3) and a.shape == (3, 13, 20, 1)
  ev, ea = scorer.embed_video(v), scorer.embed_audio(a)
  with torch.no_grad():
    ref_v = net.forward_lip(torch.from_numpy(
        v.astype(np.float32).transpose(0, 4, 1, 2, 3))).numpy()
    ref_a = net.forward_aud(torch.from_numpy(a.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(ev, ref_v, atol=2e-4 * np.abs(ref_v).max())
  np.testing.assert_allclose(ea, ref_a, atol=2e-4 * np.abs(ref_a).max())
  r = metrics.sync_scores(scorer, faces, audio, 25.0)
  assert r.scorer == scorer.name and r.frame_conf.shape == (3,)
  with pytest.raises(metrics.MetricError, match="waveform"):
    scorer.audio_windows(metrics.ClipAudio(mel=np.zeros((80, 100), np.float32)), [0], 25.0)


def test_mouth_landmarks_follow_a_translation():
  """FaceMesh lip points (shipped in the mediapipe wheel) on a face photo:
  LMD of a crop with itself is 0; a 6 px shift moves the points by ~6 px."""
  import cv2  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  crop = cv2.resize(synthetic.face_template(0).image, (96, 96), interpolation=cv2.INTER_AREA)
  shifted = cv2.warpAffine(crop, np.float32([[1, 0, 6], [0, 1, 0]]), (96, 96),
                           borderMode=cv2.BORDER_REPLICATE)
  lm = metrics.MouthLandmarks()
  pts = lm(np.stack([crop, shifted]))
  assert pts.shape == (2, len(metrics.MOUTH_LANDMARKS), 2)
  assert 48 < pts[0, :, 1].mean() < 90                # lips in the lower half
  assert metrics.landmark_distance(lm, crop[None], crop[None]) == 0.0
  dx, dy = (pts[1] - pts[0]).mean(0)
  assert 4.5 < dx < 7.5 and abs(dy) < 1.0
  assert 4.5 < metrics.landmark_distance(lm, shifted[None], crop[None]) < 7.5
