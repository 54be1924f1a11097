"""Seeded data augmentation for SyncNet samples (``data.options.augment``).

A lip-sync expert trained on little data memorises its training windows: it
learns which crop goes with which sound instead of how lips move with speech.
These augmentations change what a window looks like (and its loudness)
without changing its timing, so they leave the sync label intact. Each one is
drawn once per sample and applied alike to all of its frames, since a
per-frame jitter would itself look like mouth motion.

Upstream trains its expert without augmentation (on LRS2, where memorising is
not the problem); the option is off by default.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_SHIFT = 4          # pixels, at 96x96
SCALE_RANGE = 0.06     # crop zoom 1 +- 0.06
CONTRAST_RANGE = 0.2   # pixel gain 1 +- 0.2
BRIGHTNESS_RANGE = 20  # pixel offset +- 20 (of 255)
MEL_GAIN_RANGE = 0.25  # +- 0.25 in the [-4, 4] mel scale, about +- 3 dB
MEL_LIMIT = 4.0


def augment_faces(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(T, S, S, 3) uint8 -> (T, S, S, 3) uint8, one random transform for all T.

  Horizontal flip (p = 1/2), zoom and shift (edge pixels repeated), contrast
  and brightness.
  """
  t, h, w, _ = faces.shape
  flip = rng.random() < 0.5
  scale = 1.0 + rng.uniform(-SCALE_RANGE, SCALE_RANGE)
  dx, dy = rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2) * (w / 96.0)
  gain = 1.0 + rng.uniform(-CONTRAST_RANGE, CONTRAST_RANGE)
  offset = rng.uniform(-BRIGHTNESS_RANGE, BRIGHTNESS_RANGE)
  m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 0.0, scale)
  m[:, 2] += (dx, dy)
  out = np.empty_like(faces)
  for k in range(t):
    f = faces[k][:, ::-1] if flip else faces[k]
    out[k] = cv2.warpAffine(np.ascontiguousarray(f), m, (w, h),
                            flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
  mean = out.mean(dtype=np.float32)
  x = (out.astype(np.float32) - mean) * gain + mean + offset
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_mel(mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(..., 80, N, ...) mel in [-4, 4] -> the same, with a random gain."""
  gain = rng.uniform(-MEL_GAIN_RANGE, MEL_GAIN_RANGE)
  return np.clip(mel + np.float32(gain), -MEL_LIMIT, MEL_LIMIT).astype(mel.dtype)
