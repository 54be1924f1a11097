"""Number-for-number parity with the upstream PyTorch models (../shared/baseline)."""

from __future__ import annotations

import json
import zlib

import jax
import numpy as np
import pytest

from lipsync_jax import convert, models

ARCHS = ("wav2lip", "syncnet_color", "wav2lip_disc_qual")


def filled_state_dict(manifest: dict, arch: str) -> dict[str, np.ndarray]:
  """The deterministic weight fill of baseline/README.md, in state_dict order."""
  scale = 2.5 if arch == "wav2lip_disc_qual" else 1.0
  sd = {}
  for key, shape in manifest[arch]:
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
      a = rng.normal(0.0, 1.0, shape) * np.sqrt(scale / np.prod(shape[1:]))
    sd[key] = a.astype(np.float32)
  return sd


@pytest.fixture(scope="module")
def manifest(shared_dir):
  return json.loads((shared_dir / "baseline" / "state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def golden(shared_dir):
  with np.load(shared_dir / "baseline" / "wav2lip_golden.npz") as f:
    return dict(f)


def _rel_err(out, ref) -> float:
  out = np.asarray(out, np.float64)
  assert out.shape == ref.shape
  return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_wav2lip_parity(manifest, golden):
  variables = convert.torch_to_flax("wav2lip", filled_state_dict(manifest, "wav2lip"))
  gen = models.create("wav2lip")
  audio = golden["wav2lip_audio"].transpose(0, 1, 3, 4, 2)  # (B,T,1,80,16) -> (B,T,80,16,1)
  faces = golden["wav2lip_faces"].transpose(0, 2, 3, 4, 1)  # (B,6,T,96,96) -> (B,T,96,96,6)
  out = jax.jit(gen.apply)(variables, audio, faces)
  ref = golden["wav2lip_out"].transpose(0, 2, 3, 4, 1)
  assert _rel_err(out, ref) < 1e-4


def test_syncnet_parity(manifest, golden):
  variables = convert.torch_to_flax("syncnet_color", filled_state_dict(manifest, "syncnet_color"))
  sync = models.create("syncnet_color")
  audio_emb, face_emb = jax.jit(sync.apply)(variables,
                                            golden["syncnet_audio"].transpose(0, 2, 3, 1),
                                            golden["syncnet_faces"].transpose(0, 2, 3, 1))
  assert _rel_err(audio_emb, golden["syncnet_audio_emb"]) < 1e-4
  assert _rel_err(face_emb, golden["syncnet_face_emb"]) < 1e-4


def test_disc_parity(manifest, golden):
  variables = convert.torch_to_flax("wav2lip_disc_qual",
                                    filled_state_dict(manifest, "wav2lip_disc_qual"))
  disc = models.create("wav2lip_disc_qual")
  out = jax.jit(disc.apply)(variables, golden["disc_faces"].transpose(0, 2, 3, 4, 1))
  assert _rel_err(out, golden["disc_out"]) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_and_infer_arch(manifest, arch):
  sd = filled_state_dict(manifest, arch)
  assert convert.infer_arch(sd) == arch
  back = convert.flax_to_torch(arch, convert.torch_to_flax(arch, sd))
  assert list(back) == list(sd)  # same keys, in upstream state_dict order
  for k, v in sd.items():
    assert back[k].dtype == np.float32
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_converter_accepts_real_checkpoint_wrapping(manifest):
  import torch
  sd = filled_state_dict(manifest, "wav2lip_disc_qual")
  wrapped = {}
  for k, v in sd.items():
    wrapped["module." + k] = torch.from_numpy(v)
  wrapped["module.face_encoder_blocks.0.0.num_batches_tracked"] = torch.tensor(7)  # int64
  checkpoint = {"state_dict": wrapped, "optimizer": {"state": {}, "param_groups": []},
                "global_step": 3000, "global_epoch": 2}
  assert convert.infer_arch(checkpoint) == "wav2lip_disc_qual"
  variables = convert.torch_to_flax("wav2lip_disc_qual", checkpoint)
  np.testing.assert_array_equal(variables["params"]["binary_pred_0"]["kernel"],
                                sd["binary_pred.0.weight"].transpose(2, 3, 1, 0))

  # BN models carry num_batches_tracked in every BN layer.
  sync_sd = filled_state_dict(manifest, "syncnet_color")
  with_counters = dict(sync_sd)
  for k in sync_sd:
    if k.endswith("running_var"):
      with_counters[k.replace("running_var", "num_batches_tracked")] = np.array(5, np.int64)
  variables = convert.torch_to_flax("syncnet_color", {"state_dict": with_counters})
  np.testing.assert_array_equal(variables["batch_stats"]["face_encoder_3"]["bn"]["var"],
                                sync_sd["face_encoder.3.conv_block.1.running_var"])


def test_converter_names_bad_keys(manifest):
  sd = filled_state_dict(manifest, "wav2lip")
  del sd["audio_encoder.4.conv_block.1.running_mean"]
  sd["face_decoder_blocks.3.0.conv_block.0.weight"] = np.zeros((768, 384, 3, 1), np.float32)
  sd["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax("wav2lip", sd)
  msg = str(e.value)
  assert "\n" not in msg
  assert "missing keys: audio_encoder.4.conv_block.1.running_mean" in msg
  assert "unexpected keys: extra.weight" in msg
  assert ("face_decoder_blocks.3.0.conv_block.0.weight (expected (768, 384, 3, 3), "
          "got (768, 384, 3, 1))") in msg


def test_converter_rejects_other_arch(manifest):
  with pytest.raises(convert.ConversionError, match="missing keys: .*unexpected keys"):
    convert.torch_to_flax("wav2lip_disc_qual", filled_state_dict(manifest, "syncnet_color"))
  with pytest.raises(convert.ConversionError, match="cannot tell the architecture"):
    convert.infer_arch({"foo.weight": np.zeros(3)})
