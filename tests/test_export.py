"""ONNX export (`lipsync_jax.export`) and the onnxruntime backend of infer.py."""

from __future__ import annotations

import collections
import os
import pathlib

import av
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import checkpoint, export, inference, models
from lipsync_jax.export import __main__ as export_cli
from lipsync_jax.export import jaxpr_onnx
from lipsync_jax.models import layers

from test_inference import CLIP, SPEECH, _fill, _infer_module

infer_cli = _infer_module()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOL = 1e-4  # the export's own check: relative error ||ort - jax|| / ||jax||
# The largest single-pixel difference: LPIPS-AttnWav2Lip's instance norms make
# a few pixels unstable in float32 (JAX's jit and eager runs differ by up to
# 2e-4 there; ORT by up to 7e-4 at 192 px), Wav2Lip stays under 1e-5. With
# the resize decoder, jit and eager differ by up to 9e-4 and ORT by 4e-4 to
# 1.7e-3 (the relative error stays near 1e-5).
MAX_ABS = {"wav2lip": 1e-5, "lpips_attnwav2lip": 1e-3, "lpips_attnwav2lip/resize": 3e-3,
           "synctalkface": 1e-5}


def _ort(model, *args):
  names = [i.name for i in model.graph.input]
  sess = export.session(model.SerializeToString())
  return sess.run(None, dict(zip(names, args)))[0]


def _variables(arch, size=96, width=0.0625, seed=0, **overrides):
  kw = {"face_size": size} if size != 96 else {}
  module = models.create(arch, width_multiplier=width, **kw, **overrides)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 80, 16, 1)),
                          jnp.zeros((1, size, size, 6)))
  variables = _fill(shapes, seed)
  # Non-trivial BatchNorm statistics, so that folding them into the convs is tested.
  r = np.random.default_rng(seed + 1)
  perturb = {"mean": lambda x: x + r.normal(0, 0.2, x.shape),
             "var": lambda x: x * r.uniform(0.5, 2.0, x.shape),
             "bias": lambda x: x + r.normal(0, 0.1, x.shape)}
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: perturb.get(str(p[-1].key), lambda x: x)(x).astype(np.float32), variables)
  return module, variables


def _save(path, arch, size=96, width=0.0625):
  module, variables = _variables(arch, size, width)
  config = {"width_multiplier": width, **({"face_size": size} if size != 96 else {})}
  checkpoint.save_model(path, arch, config, variables)
  return str(path)


@pytest.mark.parametrize("arch,size,overrides", [
    ("wav2lip", 96, {}), ("lpips_attnwav2lip", 96, {}), ("lpips_attnwav2lip", 192, {}),
    ("lpips_attnwav2lip", 96, {"decoder_upsample": "resize"}),   # the demo's generator
    ("synctalkface", 96, {})])
def test_generator_graph_matches_jax_and_is_lean(arch, size, overrides):
  module, variables = _variables(arch, size, **overrides)
  model = export.generator_onnx(module, variables, arch, batch_size=3)
  mel, faces = export.example_batch(3, size, seed=7)  # not the self-check's batch
  ref = jax.jit(lambda v, a, f: models.generate_frames(module, v, a, f))(variables, mel, faces)
  got = _ort(model, mel, faces)
  ref = np.asarray(ref)
  assert got.shape == (3, size, size, 3)
  assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= TOL
  resize = overrides.get("decoder_upsample") == "resize"
  assert np.abs(got - ref).max() <= MAX_ABS[arch + ("/resize" if resize else "")]
  assert ref.std() > 0.01  # not a constant image
  ops = collections.Counter(n.op_type for n in model.graph.node)
  # One ONNX conv per jax conv; the conv biases and inference BatchNorms are
  # folded into them (each would leave an Add, a Sub and a Mul after its conv).
  n_conv = sum(e.primitive.name == "conv_general_dilated" for e in _all_eqns(
      jax.make_jaxpr(lambda a, f: models.generate_frames(module, variables, a, f))(mel, faces)))
  assert ops["Conv"] + ops["ConvTranspose"] == n_conv
  assert _affine_after_conv(model) == 0 and ops["Relu"] >= n_conv // 2
  if resize:   # nearest x2: no transposed conv
    assert not ops["ConvTranspose"]
  elif arch != "synctalkface":  # the U-Nets' stride-2 upsampling: native by default
    assert ops["ConvTranspose"] >= 4
    sub = export.generator_onnx(module, variables, arch, 3, transposed_convs="subpixel")
    assert not [n for n in sub.graph.node if n.op_type == "ConvTranspose"]
    assert np.linalg.norm(_ort(sub, mel, faces) - ref) / np.linalg.norm(ref) <= TOL
  meta = {p.key: p.value for p in model.metadata_props}
  assert meta["lipsync_jax.arch"] == arch and meta["lipsync_jax.face_size"] == str(size)


def _affine_after_conv(model) -> int:
  """Elementwise ops by a per-channel constant right after a conv's output
  Transpose (what `fold_affine_into_convs` removes)."""
  inits = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
  users = collections.defaultdict(list)
  for n in model.graph.node:
    for i in n.input:
      users[i].append(n)
  count = 0
  for conv in (n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")):
    for t in users[conv.output[0]]:
      for n in users[t.output[0]]:
        if n.op_type in ("Add", "Sub", "Mul", "Div") and any(
            i in inits and inits[i] > 1 for i in n.input):
          count += 1
  return count


def _all_eqns(closed):
  out = []

  def walk(jaxpr):
    for e in jaxpr.eqns:
      out.append(e)
      for p in e.params.values():
        if hasattr(p, "jaxpr") and hasattr(p, "consts"):
          walk(p.jaxpr)
        elif hasattr(p, "eqns"):
          walk(p)

  walk(closed.jaxpr)
  return out


@pytest.mark.parametrize("h,w", [(6, 6), (5, 7), (3, 4)])
def test_fft_round_trip_as_matrix_products(h, w):
  """rfft2 -> 1x1 mixing of (re, im) -> irfft2, as the FFC does it."""
  r = np.random.default_rng(h * w)
  x = r.normal(size=(2, h, w, 4)).astype(np.float32)
  mix = r.normal(size=(8, 8)).astype(np.float32)

  def fn(x):
    spec = jnp.fft.rfft2(x, axes=(1, 2), norm="ortho")
    z = jnp.concatenate([spec.real, spec.imag], -1) @ mix
    re, im = jnp.split(z, 2, -1)
    return jnp.fft.irfft2(jax.lax.complex(re, im), s=(h, w), axes=(1, 2), norm="ortho")

  model = jaxpr_onnx.to_onnx(fn, [x], ["x"], ["y"])
  np.testing.assert_allclose(_ort(model, x), np.asarray(jax.jit(fn)(x)), rtol=1e-5, atol=1e-5)


def test_transposed_conv_becomes_native_conv_transpose():
  r = np.random.default_rng(0)
  x = r.normal(size=(2, 5, 6, 3)).astype(np.float32)
  k = r.normal(size=(4, 4, 3, 5)).astype(np.float32)
  fn = lambda x: layers.conv_transpose_torch(x, jnp.asarray(k), 2, 1, 1, method="dilated")
  model = jaxpr_onnx.to_onnx(fn, [x], ["x"], ["y"])
  assert [n.op_type for n in model.graph.node].count("ConvTranspose") == 1
  np.testing.assert_allclose(_ort(model, x), np.asarray(fn(x)), rtol=1e-5, atol=1e-5)


def test_a_generator_that_cannot_export_says_why_in_one_line():
  module = models.create("au_tcn", width_multiplier=0.0625)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 80, 16, 1)),
                          jnp.zeros((1, 5, 96, 96, 6)))
  with pytest.raises(export.ExportError, match="au_tcn cannot be exported yet: .*random_seed"):
    export.generator_onnx(module, _fill(shapes, 0), "au_tcn", batch_size=5)


def test_unsupported_primitive_is_named():
  x = np.ones((2, 3), np.float32)
  with pytest.raises(NotImplementedError, match="cumsum"):
    jaxpr_onnx.to_onnx(lambda x: jnp.cumsum(x, axis=1), [x], ["x"], ["y"])


@pytest.fixture(scope="module")
def gen_ckpt(tmp_path_factory):
  return _save(tmp_path_factory.mktemp("ckpt") / "wav2lip", "wav2lip")


@pytest.fixture(scope="module")
def onnx_file(gen_ckpt, tmp_path_factory):
  out = tmp_path_factory.mktemp("onnx") / "wav2lip.onnx"
  assert export_cli.main(["--checkpoint", gen_ckpt, "--out", str(out), "--batch-size", "8"]) == 0
  return str(out)


def test_export_cli_writes_a_checked_file_with_its_metadata(onnx_file):
  meta = export.read_metadata(onnx_file)
  assert meta == {"arch": "wav2lip", "face_size": 96, "batch_size": 8}


def test_export_refuses_to_write_a_graph_that_differs(gen_ckpt, tmp_path, monkeypatch):
  real = export.generator_onnx

  def corrupted(*args, **kwargs):
    model = real(*args, **kwargs)
    from onnx import numpy_helper
    t = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # a big kernel
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, t.name))
    return model

  monkeypatch.setattr(export, "generator_onnx", corrupted)
  out = tmp_path / "bad.onnx"
  assert export_cli.main(["--checkpoint", gen_ckpt, "--out", str(out), "--batch-size", "2"]) == 2
  assert not out.exists() and not list(tmp_path.iterdir())


def test_export_cli_bad_input_is_one_line(tmp_path, capsys):
  syncnet = models.create("syncnet_color", width_multiplier=0.0625)
  shapes = jax.eval_shape(syncnet.init, jax.random.PRNGKey(0), jnp.zeros((1, 80, 16, 1)),
                          jnp.zeros((1, 48, 96, 15)))
  checkpoint.save_model(tmp_path / "syncnet", "syncnet_color", {"width_multiplier": 0.0625},
                        _fill(shapes, 0))
  cases = [
      (["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "a.onnx")], "not found"),
      (["--checkpoint", str(tmp_path / "syncnet"), "--out", str(tmp_path / "a.onnx")],
       "syncnet_color"),
  ]
  for argv, what in cases:
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and what in err[-1], err
  assert not (tmp_path / "a.onnx").exists()


@pytest.mark.skipif(not (SHARED / CLIP).exists(), reason="needs ../shared/data/real")
def test_infer_onnx_backend_matches_jax_on_a_real_clip(onnx_file, gen_ckpt, tmp_path, capsys):
  args = ["--face", str(SHARED / CLIP), "--audio", str(SHARED / SPEECH),
          "--cache-dir", str(tmp_path / "boxes")]
  out_jax, out_ort = tmp_path / "jax.mp4", tmp_path / "ort.mp4"
  assert infer_cli.main(["--checkpoint", gen_ckpt, "--batch-size", "8", "--outfile",
                         str(out_jax)] + args) == 0
  assert infer_cli.main(["--checkpoint", onnx_file, "--outfile", str(out_ort)] + args) == 0
  a, b = _frames(out_jax), _frames(out_ort)
  assert len(a) == len(b) > 50
  # The same video up to H.264's noise (the tiny random generator draws
  # high-frequency mouths, so the encoder's choices differ a little) ...
  assert _psnr(a, b) > 35.0, _psnr(a, b)
  # ... and not the input: the mouth region was generated.
  with av.open(str(SHARED / CLIP)) as c:
    src = np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)][:len(b)])
  assert _psnr(src, b[:len(src)]) < _psnr(a, b) - 5.0
  # The generators themselves, on the clip's crops, agree to 1 level in uint8.
  jax_syncer = inference.LipSyncer.from_checkpoint(gen_ckpt, batch_size=8)
  ort_syncer = inference.LipSyncer.from_onnx(onnx_file)
  crops = np.stack([cv2.resize(f[40:200, 32:192], (96, 96)) for f in src[:8]])
  mel = np.random.default_rng(0).normal(-1, 1.5, (8, 80, 16, 1)).astype(np.float32)
  u8_jax = np.asarray(jax_syncer.generate_batch(jax_syncer.variables, mel, crops))
  u8_ort = ort_syncer.generate_batch(ort_syncer.variables, mel, crops)
  d = np.abs(u8_jax.astype(np.int16) - u8_ort.astype(np.int16))
  assert d.max() <= 1 and (d == 0).mean() > 0.99


def _psnr(a, b) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _frames(path):
  with av.open(str(path)) as c:
    return np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])


def test_onnx_backend_bad_files_are_one_line(onnx_file, gen_ckpt, tmp_path, capsys):
  import onnx
  model = onnx.load(onnx_file)
  # A file whose metadata names another size than its inputs take.
  for p in model.metadata_props:
    if p.key == "lipsync_jax.face_size":
      p.value = "192"
  onnx.save(model, str(tmp_path / "wrong_size.onnx"))
  # A file that is ONNX but not ours.
  del model.metadata_props[:]
  onnx.save(model, str(tmp_path / "foreign.onnx"))
  (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
  for name, what in (("wrong_size.onnx", "does not take the inputs"),
                     ("foreign.onnx", "not a lipsync_jax generator export"),
                     ("junk.onnx", "not a readable ONNX file")):
    with pytest.raises(inference.InferenceError, match=what):
      inference.LipSyncer.from_onnx(tmp_path / name)
  out = tmp_path / "o.mp4"
  face = str(SHARED / CLIP) if (SHARED / CLIP).exists() else __file__
  cases = [
      (["--checkpoint", str(tmp_path / "junk.onnx")], "not a readable ONNX file"),
      (["--checkpoint", gen_ckpt, "--backend", "onnxruntime"], "lipsync_jax.export"),
      (["--checkpoint", onnx_file, "--backend", "jax"], "--backend onnxruntime"),
  ]
  for argv, what in cases:
    code = infer_cli.main(argv + ["--face", face, "--audio", face, "--outfile", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and what in err[-1], err
    assert not out.exists()
  assert os.path.exists(onnx_file)


# -----------------------------------------------------------------------------
# INT8.
# -----------------------------------------------------------------------------

GRID = "data/real/av/grid/bbaf2n.mpg"


@pytest.mark.skipif(not (SHARED / CLIP).exists(), reason="needs ../shared/data/real")
def test_int8_face_batches_are_inference_inputs():
  from lipsync_jax.export import int8
  from lipsync_jax.io import audio as audio_lib
  batches = int8.face_batches([SHARED / CLIP], 96, 8, max_batches=2)
  assert len(batches) == 2
  mel, faces = batches[0]
  assert mel.shape == (8, 80, 16, 1) and faces.shape == (8, 96, 96, 6)
  assert faces.min() >= 0 and faces.max() <= 1 and faces[:, 48:, :, :3].max() == 0
  assert faces[:, :48, :, :3].std() > 0.05  # real upper faces
  np.testing.assert_array_equal(faces[:, :48, :, :3], faces[:, :48, :, 3:])
  wav = audio_lib.load_audio(SHARED / CLIP)
  windows = audio_lib.mel_windows(audio_lib.melspectrogram(wav), 200, 25.0)
  # The windows are the clip's own, frame-aligned (the crops start at frame
  # `first`; find it by matching the first window).
  first = next(i for i in range(200) if np.allclose(windows[i], mel[0, ..., 0]))
  np.testing.assert_allclose(mel[:, ..., 0], windows[first:first + 8])


@pytest.mark.skipif(not (SHARED / CLIP).exists(), reason="needs ../shared/data/real")
@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_int8_export_is_judged_and_gated_on_lpips(gen_ckpt, tmp_path, monkeypatch, capsys):
  from lipsync_jax.export import int8
  argv = ["--checkpoint", gen_ckpt, "--out", str(tmp_path / "g.onnx"), "--batch-size", "8",
          "--int8", "--calibrate", str(SHARED / CLIP), "--held-out", str(SHARED / GRID),
          "--calibration-batches", "2"]
  # A bar no file can pass: the fp32 file is written, the INT8 one refused
  # with its figures, and nothing is left behind.
  monkeypatch.setattr(int8, "MAX_LPIPS", 0.0)
  assert export_cli.main(argv) == 1
  out = capsys.readouterr().out
  assert "int8: not written: LPIPS(int8, fp32)" in out
  assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]
  # --force-int8 writes it, with the measured figures in its metadata.
  assert export_cli.main(argv + ["--force-int8"]) == 0
  q = tmp_path / "g.int8.onnx"
  assert q.exists()
  import onnx
  model = onnx.load(str(q))
  meta = {p.key: p.value for p in model.metadata_props}
  assert meta["lipsync_jax.precision"] == "int8" and meta["lipsync_jax.arch"] == "wav2lip"
  lp = float(meta["lipsync_jax.int8_lpips"])
  assert 0 < lp < 1 and f"LPIPS(int8, fp32) {lp:.4f}" in capsys.readouterr().out
  ops = collections.Counter(n.op_type for n in model.graph.node)
  assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > 10
  # It runs as a backend, and stays close to the fp32 file's faces.
  s8 = inference.LipSyncer.from_onnx(q)
  s32 = inference.LipSyncer.from_onnx(tmp_path / "g.onnx")
  mel, faces = int8.face_batches([SHARED / GRID], 96, 8, max_batches=1)[0]
  crops = np.round(faces[..., 3:] * 255).astype(np.uint8)
  d = np.abs(s8.generate_batch({}, mel, crops).astype(np.int16)
             - s32.generate_batch({}, mel, crops).astype(np.int16))
  assert 0 < d.mean() < 20


def test_int8_bad_arguments_are_one_line(gen_ckpt, tmp_path, capsys):
  base = ["--checkpoint", gen_ckpt, "--out", str(tmp_path / "g.onnx"), "--int8"]
  cases = [(base, "needs --calibrate"),
           (base + ["--calibrate", __file__, "--held-out", __file__], "also a calibration video"),
           (base + ["--calibrate", str(tmp_path / "x.mp4"), "--held-out", __file__],
            "video not found")]
  for argv, what in cases:
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0], err
  assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not (SHARED / CLIP).exists(), reason="needs ../shared/data/real")
def test_infer_batch_mode_on_the_onnx_backend(onnx_file, tmp_path, capsys):
  import csv
  jobs = tmp_path / "jobs.csv"
  with open(jobs, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["face", "audio", "outfile"])
    w.writerow([SHARED / CLIP, SHARED / SPEECH, tmp_path / "a.mp4"])
    w.writerow([SHARED / GRID, SHARED / SPEECH, tmp_path / "b.mp4"])
  code = infer_cli.main(["--checkpoint", onnx_file, "--jobs", str(jobs),
                         "--cache-dir", str(tmp_path / "boxes")])
  out = capsys.readouterr().out
  assert code == 0, out
  assert "2/2 jobs succeeded; onnxruntime session loaded once" in out
  assert len(_frames(tmp_path / "a.mp4")) == len(_frames(tmp_path / "b.mp4")) > 50
