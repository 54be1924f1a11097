"""INT8 generator files: onnxruntime static quantisation, judged before use.

A quantised generator is only as good as its measured distance from the fp32
one, so this module does three things:

1. `face_batches`: real inputs, (mel windows, masked + reference faces) as
   `LipSyncer` builds them, from talking-face videos with speech (the face
   found and cropped by `vision.face_crops`, the windows from the video's own
   audio);
2. `quantize`: onnxruntime's static quantisation of an fp32 export (QDQ,
   int8 weights per output channel, uint8 activations whose ranges are
   percentiles over `face_batches` of some videos);
3. `judge`: PSNR and LPIPS (AlexNet) of the INT8 file's faces against the
   fp32 file's, on `face_batches` of other (held-out) videos.

`python -m lipsync_jax.export --int8 --calibrate V.. --held-out V..` writes
the INT8 file only when LPIPS(int8, fp32) < `MAX_LPIPS` (0.01), unless told
`--force-int8`; the measured figures go into the file's metadata
(`lipsync_jax.int8_lpips`, `lipsync_jax.int8_psnr`) either way.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np

MAX_LPIPS = 0.01
# Activation ranges: the 99.99th percentile of |x| over the calibration frames,
# not the min/max, which a few outliers stretch. On the demo's trained
# LPIPS-AttnWav2Lip (held-out identity, 640 frames), LPIPS(int8, fp32):
# min/max 0.0207, 99.999th percentile 0.0114, 99.99th 0.0074.
PERCENTILE = 99.99


def face_batches(videos: Sequence[str | os.PathLike], face_size: int, batch_size: int,
                 max_batches: int | None = None, detector: str = "default",
                 progress=None) -> list[tuple[np.ndarray, np.ndarray]]:
  """(mel (N, 80, 16, 1) float32, faces (N, S, S, 6) [0, 1]) batches of real
  frames, N = `batch_size` (the last partial batch of each video dropped).

  Raises:
    ValueError (one line): a video without a usable face or audio.
  """
  from lipsync_jax import export  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_detection  # pylint: disable=import-outside-toplevel
  det = face_detection.create_detector(detector)
  batches = []
  for path in videos:
    try:
      crops, first, fps, _ = face_crops.video_face_crops(os.fspath(path), face_size, det)
    except face_crops.FaceCropError as e:
      raise ValueError(f"{path}: {e}") from None
    if progress:
      progress(f"{path}: {len(crops)} faces")
    mel = audio_lib.melspectrogram(audio_lib.load_audio(path))
    windows = audio_lib.mel_windows(mel, first + len(crops), fps)[first:]
    faces = export.faces_input(crops)
    for i in range(0, len(crops) - batch_size + 1, batch_size):
      batches.append((windows[i:i + batch_size, ..., None].astype(np.float32),
                      faces[i:i + batch_size]))
      if max_batches and len(batches) >= max_batches:
        return batches
  if not batches:
    raise ValueError(f"the videos hold fewer than {batch_size} consecutive faces")
  return batches


def quantize(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
             calibration: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
  """Writes the static INT8 (QDQ) quantisation of an fp32 export to `out_path`
  (not atomically: give it a temporary name), metadata kept."""
  import onnx  # pylint: disable=import-outside-toplevel
  from onnxruntime import quantization as q  # pylint: disable=import-outside-toplevel

  class Reader(q.CalibrationDataReader):

    def __init__(self):
      self._it = iter(calibration)

    def get_next(self):
      item = next(self._it, None)
      return None if item is None else {"audio": item[0], "faces": item[1]}

  with contextlib.redirect_stdout(io.StringIO()):  # its calibrator prints its settings
    q.quantize_static(os.fspath(fp32_path), os.fspath(out_path), Reader(),
                      quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.Percentile,
                      extra_options={"CalibPercentile": PERCENTILE})
  src, dst = onnx.load(os.fspath(fp32_path)), onnx.load(os.fspath(out_path))
  del dst.metadata_props[:]
  dst.metadata_props.extend(src.metadata_props)
  onnx.save(dst, os.fspath(out_path))


def judge(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
          held_out: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
  """PSNR (dB) and LPIPS of the INT8 file's faces against the fp32 file's,
  and the largest absolute difference, over the held-out batches."""
  from lipsync_jax import export  # pylint: disable=import-outside-toplevel
  from lipsync_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  s32, s8 = export.session(fp32_path), export.session(int8_path)
  a, b = [], []
  for mel, faces in held_out:
    feed = {"audio": mel, "faces": faces}
    a.append(s32.run(None, feed)[0])
    b.append(s8.run(None, feed)[0])
  # Judged as inference writes them: uint8 faces.
  a, b = export.frames_to_u8(np.concatenate(a)), export.frames_to_u8(np.concatenate(b))
  scores = metrics.reconstruction_metrics(b, a, metrics.LPIPSMetric("alexnet"))
  return {"psnr": scores["psnr"], "ssim": scores["ssim"], "lpips": scores["lpips"],
          "max_abs_u8": int(np.abs(a.astype(np.int16) - b).max()), "frames": int(len(a))}


def set_metadata(path: str | os.PathLike, values: dict[str, str]) -> None:
  import onnx  # pylint: disable=import-outside-toplevel
  from lipsync_jax import export  # pylint: disable=import-outside-toplevel
  model = onnx.load(os.fspath(path))
  keep = [p for p in model.metadata_props
          if p.key not in {export.META_PREFIX + k for k in values}]
  del model.metadata_props[:]
  model.metadata_props.extend(keep)
  for k, v in values.items():
    entry = model.metadata_props.add()
    entry.key, entry.value = export.META_PREFIX + k, str(v)
  onnx.save(model, os.fspath(path))


def temporary_path(near: str | os.PathLike) -> str:
  """A fresh file name in the folder of `near` (for a later atomic rename)."""
  fd, name = tempfile.mkstemp(suffix=".onnx.tmp", dir=os.path.dirname(os.path.abspath(near)))
  os.close(fd)
  return name
