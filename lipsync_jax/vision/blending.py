"""Pasting a generated 96x96 face back into the full frame.

Upstream Wav2Lip resizes the generated crop to the face box and overwrites the
box ("hard paste"), which leaves a visible rectangle: the generator's colours
drift a little from the frame's, and its upper half is a re-synthesis of the
reference rather than the untouched original. Here the default paste

1. keeps the original pixels everywhere except a feathered region over the
   lower face (the half the generator actually re-draws), using a soft mask
   that is ~1 over the mouth and jaw and falls smoothly to 0 well inside the
   box edges, so there is no seam at the box border; and
2. shifts the generated colours per channel so that they agree with the
   original along the seam (the band where the mask is neither 0 nor 1)
   before blending, so the transition band does not show a colour step.

`hard=True` reproduces upstream's paste for comparisons.

A generator that knows where the mouth is (the two-stage model draws the lips
it is given) can narrow the paste to the mouth (`mouth_mask`): the input's
own skin, folds and jaw line then stay untouched, and only the region the
new mouth needs is re-drawn. The soft paste upscales the crop bicubically
(bilinear, upstream's choice, blurs a 96 px crop blown up to a 250 px box).

All images are BGR uint8 (H, W, 3) on the host; masks are float32 in [0, 1].
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), pixels, x2/y2 exclusive

# Mask geometry in crop coordinates (fractions of the crop's height/width).
# The generator re-draws rows 48..96 of the 96x96 crop (the masked half).
MASK_TOP = 0.45        # mask is 0 above this row ...
MASK_TOP_FULL = 0.62   # ... and reaches 1 at this row
MASK_BOTTOM_FULL = 0.86
MASK_SIDE = 0.04       # 0 within this fraction of the left/right edges ...
MASK_SIDE_FULL = 0.20  # ... and 1 inside this fraction

# Mouth mask geometry, as fractions of the mouth's width (`mouth_mask`).
MOUTH_MARGIN = 0.3     # the mask reaches this far beyond the lips ...
MOUTH_CHIN = 0.3       # ... and this much further down, where the jaw drops
MOUTH_FEATHER = 0.1    # the Gaussian feather's sigma


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


@functools.lru_cache(maxsize=8)
def lower_face_mask(size: int = 96) -> np.ndarray:
  """Soft lower-face mask for a square crop, float32 (size, size), read-only.

  1 over the mouth/jaw region, 0 on the upper half and along every crop edge,
  with smooth (C1) ramps between. Build it once at the generator resolution and
  resize it together with the generated face.
  """
  u = (np.arange(size, dtype=np.float32) + 0.5) / size
  vertical = (_smoothstep(u, MASK_TOP, MASK_TOP_FULL)
              * (1.0 - _smoothstep(u, MASK_BOTTOM_FULL, 1.0)))
  dist_side = np.minimum(u, 1.0 - u)
  horizontal = _smoothstep(dist_side, MASK_SIDE, MASK_SIDE_FULL)
  mask = np.outer(vertical, horizontal).astype(np.float32)
  mask.setflags(write=False)
  return mask


def mouth_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
  """Soft mask (height, width) float32 in [0, 1] over a mouth.

  Args:
    points: (N, 2) lip points (x, y) in crop units ([0, 1] of the crop), e.g.
      the lips a generator drew and the input frame's own, so that neither
      mouth shows outside the mask.
    width, height: the mask's size in pixels (the face box's).

  The convex hull of the points and of the same points moved down by
  `MOUTH_CHIN` mouth widths (where the chin goes when the jaw drops), grown
  by `MOUTH_MARGIN` widths, then feathered by a Gaussian of `MOUTH_FEATHER`
  widths: 1 over the mouth, 0 a few mouth-widths away. The mouth's width is
  the points' horizontal extent.
  """
  pts = np.asarray(points, np.float32).reshape(-1, 2) * np.float32([width, height])
  w = max(float(np.ptp(pts[:, 0])), 2.0)
  both = np.concatenate([pts, pts + np.float32([0.0, MOUTH_CHIN * w])])
  mask = np.zeros((height, width), np.uint8)
  cv2.fillConvexPoly(mask, np.round(cv2.convexHull(both)).astype(np.int32), 1)
  k = max(1, int(round(MOUTH_MARGIN * w)))
  mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
  return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.5, MOUTH_FEATHER * w))


def seam_weights(mask: np.ndarray) -> np.ndarray:
  """Weights (H, W) concentrated on the transition band of a soft mask.

  4 m (1 - m): 1 where the mask is 0.5, 0 where it is 0 or 1.
  """
  return 4.0 * mask * (1.0 - mask)


def match_color(generated: np.ndarray, original: np.ndarray,
                weights: np.ndarray) -> np.ndarray:
  """Shifts `generated` per channel so its weighted mean matches `original`.

  Args:
    generated, original: (H, W, 3) float32 images of the same region.
    weights: (H, W) non-negative weights (use `seam_weights(mask)`).
  Returns:
    (H, W, 3) float32, `generated` plus a per-channel offset, clipped to the
    range [0, 255]. Returned unchanged when the weights sum to ~0.
  """
  total = float(weights.sum())
  if total < 1e-6:
    return generated
  w = weights[..., None]
  offset = ((original - generated) * w).sum(axis=(0, 1)) / total
  return np.clip(generated + offset.astype(np.float32), 0.0, 255.0)


def clip_box(box, frame_shape) -> Box | None:
  """Rounds a (x1, y1, x2, y2) box to ints inside the frame; None if empty."""
  h, w = frame_shape[:2]
  x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
  x1, x2 = max(0, x1), min(w, x2)
  y1, y2 = max(0, y1), min(h, y2)
  if x2 - x1 < 2 or y2 - y1 < 2:
    return None
  return x1, y1, x2, y2


def paste(frame: np.ndarray, box, face: np.ndarray, *, hard: bool = False,
          color_match: bool = True, mouth: np.ndarray | None = None) -> np.ndarray:
  """Pastes a generated face crop into `frame` in place and returns `frame`.

  Args:
    frame: (H, W, 3) uint8 BGR frame, modified in place.
    box: (x1, y1, x2, y2) pixel box the crop was taken from.
    face: (S, S, 3) uint8 BGR generated crop (S = 96 for the generators).
    hard: overwrite the whole box as upstream does (no mask, no colour match).
    color_match: match the generated colours to the frame along the seam.
    mouth: (N, 2) lip points in crop units: paste only around them
      (`mouth_mask`, within the lower-face mask). None: the lower face.
  """
  b = clip_box(box, frame.shape)
  if b is None:
    return frame
  x1, y1, x2, y2 = b
  bw, bh = x2 - x1, y2 - y1
  if hard:
    frame[y1:y2, x1:x2] = cv2.resize(face, (bw, bh), interpolation=cv2.INTER_LINEAR)
    return frame
  mask = cv2.resize(lower_face_mask(face.shape[0]), (bw, bh),
                    interpolation=cv2.INTER_LINEAR)
  if mouth is not None:
    mask = mask * mouth_mask(mouth, bw, bh)
  region = frame[y1:y2, x1:x2].astype(np.float32)
  gen = cv2.resize(face, (bw, bh), interpolation=cv2.INTER_CUBIC).astype(np.float32)
  if color_match:
    gen = match_color(gen, region, seam_weights(mask))
  m = mask[..., None]
  out = region + m * (gen - region)
  frame[y1:y2, x1:x2] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
  return frame
