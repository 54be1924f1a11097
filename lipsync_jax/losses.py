"""Loss functions for the expert and the generators. All pure, all NHWC.

Images are BGR floats in [0, 1]. Every loss returns a float32 scalar (the
mean over its inputs) unless stated otherwise, whatever the compute dtype of
its inputs, so that bf16 models still reduce in float32.

The probability BCE copies PyTorch's `F.binary_cross_entropy`, including its
clamp of each log term at -100, so that a probability of exactly 0 or 1 gives
a large but finite loss (upstream trains the expert with BCE on the raw
cosine similarity, which does reach 0 and 1).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LOG_CLAMP = -100.0


def _f32(x: Array) -> Array:
  return jnp.asarray(x, jnp.float32)


def l1(pred: Array, target: Array) -> Array:
  """Mean absolute error over all elements; any matching shapes."""
  return jnp.mean(jnp.abs(_f32(pred) - _f32(target)))


def bce(prob: Array, label: Array | float) -> Array:
  """PyTorch `binary_cross_entropy` (mean reduction) on probabilities.

  Args:
    prob: (...) probabilities in [0, 1].
    label: (...) or scalar targets in [0, 1].
  Returns:
    Scalar: mean of -(y log p + (1 - y) log(1 - p)), each log clamped >= -100.
  """
  p = _f32(prob)
  y = jnp.broadcast_to(_f32(label), p.shape)
  log_p = _clamped_log(p)
  log_1mp = _clamped_log(1.0 - p)
  return -jnp.mean(y * log_p + (1.0 - y) * log_1mp)


def _clamped_log(x: Array) -> Array:
  """max(log x, -100) with a finite gradient (0 where clamped, even at x=0)."""
  pos = x > 0
  log_x = jnp.log(jnp.where(pos, x, 1.0))
  return jnp.where(pos & (log_x > LOG_CLAMP), log_x, LOG_CLAMP)


def bce_with_logits(logits: Array, label: Array | float) -> Array:
  """Numerically stable BCE on logits (mean); same as `bce(sigmoid(logits))`."""
  z = _f32(logits)
  y = jnp.broadcast_to(_f32(label), z.shape)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))


def cosine_similarity(audio_emb: Array, face_emb: Array,
                      eps: float = 1e-8) -> Array:
  """Row-wise cosine of two (B, D) embeddings -> (B,) float32.

  The expert already L2-normalises its outputs; normalising again is a no-op
  for them and makes the function safe for arbitrary embeddings.
  """
  a = _f32(audio_emb)
  v = _f32(face_emb)
  num = jnp.sum(a * v, axis=-1)
  den = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(v, axis=-1)
  return num / jnp.maximum(den, eps)


def syncnet_loss(audio_emb: Array, face_emb: Array, label: Array,
                 logit_scale: Array | None = None,
                 logit_bias: Array | None = None) -> tuple[Array, Array]:
  """Expert training loss: BCE of the cosine similarity against the label.

  Args:
    audio_emb, face_emb: (B, D) embeddings (non-negative, L2-normalised).
    label: (B,) 1.0 for in-sync pairs, 0.0 otherwise.
    logit_scale, logit_bias: when given (scalars), the loss is BCE with
      logits `scale * cos + bias` instead of upstream's BCE on the raw cosine.
  Returns:
    (loss scalar, cos (B,)).
  """
  cos = cosine_similarity(audio_emb, face_emb)
  if logit_scale is None:
    return bce(cos, label), cos
  bias = 0.0 if logit_bias is None else logit_bias
  return bce_with_logits(logit_scale * cos + bias, label), cos


def in_batch_sync_loss(audio_emb: Array, face_emb: Array, label: Array,
                       logit_scale: Array) -> Array:
  """Symmetric InfoNCE over the batch for the in-sync pairs (CLIP-style).

  Each in-sync audio window must pick its own face window among all B face
  windows of the batch (other clips, and the same clip's off-sync windows of
  the negative samples), and each in-sync face window its own audio window.
  This gives every positive B - 1 negatives per step instead of one, which is
  what lets a small expert leave the 0.69 plateau early.

  Args:
    audio_emb, face_emb: (B, D) embeddings; row i of both comes from sample i.
    label: (B,) 1.0 where sample i is in sync (only those rows/columns are
      queries; they are also the only ones with a known match).
    logit_scale: scalar temperature applied to the cosine matrix.
  Returns:
    Scalar: mean over the in-sync queries of both directions (0 if none).
  """
  a = _f32(audio_emb)
  v = _f32(face_emb)
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
  logits = _f32(logit_scale) * (a @ v.T)                        # (B, B)
  targets = jnp.arange(a.shape[0])
  a2v = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  v2a = optax.softmax_cross_entropy_with_integer_labels(logits.T, targets)
  w = _f32(label)
  return jnp.sum(w * (a2v + v2a)) / jnp.maximum(2.0 * jnp.sum(w), 1.0)


def lower_half_stack(frames: Array) -> Array:
  """SyncNet face input from a 5-frame window.

  Args:
    frames: (B, T, H, W, C) frames (T = 5, H = 96, C = 3), BGR.
  Returns:
    (B, H // 2, W, T * C): the lower halves (rows H//2..) stacked on channels
    in frame order, channel t * C + c = channel c of frame t (upstream's
    `torch.cat([x[:, :, i] for i in range(T)], dim=1)`).
  """
  b, t, h, w, c = frames.shape
  lower = frames[:, :, h // 2:]  # (B, T, H/2, W, C)
  return jnp.transpose(lower, (0, 2, 3, 1, 4)).reshape(b, h - h // 2, w, t * c)


def resize_faces(frames: Array, size: int) -> Array:
  """(B, T, H, W, C) -> (B, T, size, size, C), bilinear with antialiasing
  when shrinking; differentiable, and the identity at H == W == size."""
  b, t, h, w, c = frames.shape
  if (h, w) == (size, size):
    return frames
  out = jax.image.resize(frames.astype(jnp.float32), (b, t, size, size, c), "linear",
                         antialias=True)
  return out.astype(frames.dtype)


def sync_loss(expert_apply: Callable[..., tuple[Array, Array]],
              generated: Array, sync_audio: Array,
              expert_face_size: int = 96) -> tuple[Array, Array]:
  """Expert sync loss of generated frames: BCE(cos(audio, lower halves), 1).

  Args:
    expert_apply: `fn(audio (B,80,16,1), faces (B,48,96,15)) -> (a, v)`,
      the frozen expert with its variables and BN mode already bound.
    generated: (B, 5, S, S, 3) generated frames in [0, 1]. A high-resolution
      generator's frames (S > 96) are resized to the expert's
      `expert_face_size` first (`resize_faces`), so its gradient flows back
      through the resize: the expert judges the mouth at its training size.
    sync_audio: (B, 80, 16, 1) mel window aligned with the 5 frames.
  Returns:
    (loss scalar, cos (B,)).
  """
  generated = resize_faces(generated, expert_face_size)
  audio_emb, face_emb = expert_apply(sync_audio, lower_half_stack(generated))
  cos = cosine_similarity(audio_emb, face_emb)
  return bce(cos, 1.0), cos


def gan_generator_loss(fake_logits: Array) -> Array:
  """Non-saturating G loss, BCE(D(G(x)), 1), on the discriminator's logits."""
  return bce_with_logits(fake_logits, 1.0)


def gan_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
  """D loss BCE(D(y), 1) + BCE(D(G(x)), 0), summed as upstream's two
  backward passes before one optimiser step. Logits (N, 1) each."""
  return bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0)


def lpips_loss(lpips_fn: Callable[[Array, Array], Array], pred: Array,
               target: Array) -> Array:
  """Mean LPIPS distance between generated and real frames.

  Args:
    lpips_fn: frozen LPIPS `fn(x (N,H,W,3), y (N,H,W,3)) -> (N,)` on BGR
      images in [0, 1] (see `lipsync_jax.lpips`); its parameters are bound
      by the caller and never trained.
    pred, target: (B, T, H, W, 3) or (N, H, W, 3) in [0, 1].
  Returns:
    Scalar mean distance.
  """
  shape = pred.shape
  x = pred.reshape((-1,) + shape[-3:])
  y = target.reshape((-1,) + shape[-3:])
  return jnp.mean(_f32(lpips_fn(x, y)))


def mouth_crops(images: Array, lips: Array, window: float = 0.5) -> Array:
  """Square crops centred on each frame's mouth.

  Args:
    images: (B, T, S, S, C) or (N, S, S, C) frames.
    lips: (B, T, P, 2) or (N, P, 2) lip points (x, y) in crop units [0, 1]
      of those frames (`lip_landmarks.LIP_POINTS`).
    window: the crop's side as a fraction of S (0.5: a mouth with room for
      the chin and the cheeks beside it); the crop is kept inside the frame.
  Returns:
    (N, w, w, C) crops, N = B * T, w = round(window * S), in the images'
    dtype.
  """
  s = images.shape[-2]
  x = images.reshape((-1,) + images.shape[-3:])
  pts = _f32(lips).reshape(x.shape[0], -1, 2)
  w = max(1, int(round(window * s)))
  # Integer corners (dynamic_slice clamps them into the frame); the centre
  # is the lips' centroid, which moves with the head, not the jaw alone.
  corner = jnp.round(pts.mean(axis=1) * s - w / 2).astype(jnp.int32)
  def cut(img, c):
    return jax.lax.dynamic_slice(img, (c[1], c[0], 0), (w, w, img.shape[-1]))
  return jax.vmap(cut)(x, corner)


def mouth_loss(pred: Array, target: Array, lips: Array,
               lpips_fn: Callable[[Array, Array], Array] | None = None,
               lpips_weight: float = 1.0, window: float = 0.5) -> Array:
  """L1 (+ `lpips_weight` x LPIPS) on crops around the target's mouth.

  The whole-face L1 and LPIPS give the mouth its share of the pixels, about
  a tenth; this term spends the same effort on the lips, the teeth and the
  inside of the mouth alone (`mouth_crops`, LPIPS at the frame's size).

  Args:
    pred, target: (B, T, S, S, 3) or (N, S, S, 3) in [0, 1].
    lips: (B, T, 40, 2) or (N, 40, 2): the target's lips, crop units.
    lpips_fn: as `lpips_loss` (None: L1 alone).
  Returns:
    Scalar.
  """
  s = pred.shape[-2]
  p = mouth_crops(_f32(pred), lips, window)
  t = mouth_crops(_f32(target), lips, window)
  loss = l1(p, t)
  if lpips_fn is not None and lpips_weight:
    up = (p.shape[0], s, s, p.shape[-1])
    loss = loss + lpips_weight * lpips_loss(lpips_fn, jax.image.resize(p, up, "bilinear"),
                                            jax.image.resize(t, up, "bilinear"))
  return loss


def memory_alignment_kl(lip_address: Array, audio_address: Array,
                        eps: float = 1e-13) -> Array:
  """SyncTalkFace's L_align = KL(A_lip || A_aud), trains the audio side only.

  sum_i p_i (log p_i - log(q_i + eps)) over the slots, averaged over the
  other axes (PyTorch's "batchmean"), with p = stop_gradient(A_lip) and
  q = A_aud; p log p is `xlogy`, so empty slots add 0.

  Args:
    lip_address: (..., S) value addresses A_lip (rows sum to 1).
    audio_address: (..., S) key addresses A_aud.
    eps: added inside the log of q (the code's 1e-13, not a clamp).
  Returns:
    Scalar float32.
  """
  p = jax.lax.stop_gradient(_f32(lip_address))
  q = _f32(audio_address)
  kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * jnp.log(q + eps), axis=-1)
  return jnp.mean(kl)


def memory_store_loss(value_recall: Array, lip_query: Array) -> Array:
  """SyncTalkFace's L_store = MSE(A_lip M_lip, stop_gradient(v_embd(f_lip))).

  Mean over all elements; gradients reach the value memory and, through the
  address, `v_embd` and the lip encoder, never the target.

  Args:
    value_recall: (..., C) value-memory recall.
    lip_query: (..., C) the projected lip feature it should reproduce.
  Returns:
    Scalar float32.
  """
  target = jax.lax.stop_gradient(_f32(lip_query))
  return jnp.mean(jnp.square(_f32(value_recall) - target))


def visual_sync_loss(generated_emb: Array, real_emb: Array) -> Array:
  """SyncTalkFace's visual-visual sync loss, mean |E_lip(generated) - E_lip(real)|.

  Args:
    generated_emb: (B, C) lip-encoder embeddings of the generated 5-frame
      windows (computed with stop-gradient encoder weights by the caller).
    real_emb: (B, C) embeddings of the ground-truth windows of the same
      frames (not stop-gradient: the lip encoder learns from this side).
  Returns:
    Scalar float32, mean over the batch and the C dims.
  """
  return jnp.mean(jnp.abs(_f32(generated_emb) - _f32(real_emb)))


def masked_bce_with_logits(logits: Array, labels: Array, mask: Array | None = None
                           ) -> Array:
  """Mean BCE over the entries where `mask` is 1 (AU presence losses).

  Args:
    logits: (..., K) float logits.
    labels: (..., K) targets in [0, 1].
    mask: (...) or (..., K) weights (1 = labelled), or None for all.
  Returns:
    Scalar float32; 0 when nothing is labelled.
  """
  logits, labels = _f32(logits), _f32(labels)
  per = optax.sigmoid_binary_cross_entropy(logits, labels)
  if mask is None:
    return jnp.mean(per)
  m = jnp.broadcast_to(_f32(mask)[..., None] if mask.ndim < logits.ndim else _f32(mask),
                       per.shape)
  return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)


def au_consistency_loss(generated_logits: Array, real_logits: Array) -> Array:
  """The AU loss of the au_tcn variant: BCE(sigmoid(AUcls(generated)),
  sigmoid(AUcls(real))), the soft targets stop-gradient. (..., K) logits ->
  scalar float32."""
  target = jax.nn.sigmoid(jax.lax.stop_gradient(_f32(real_logits)))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(_f32(generated_logits), target))


def all_finite(metrics: dict[str, Any]) -> Array:
  """True when every leaf of `metrics` is finite (jit-friendly)."""
  leaves = [jnp.all(jnp.isfinite(_f32(v))) for v in jax.tree_util.tree_leaves(metrics)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
