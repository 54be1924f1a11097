"""A jaxpr -> ONNX translator for the primitives our generators lower to.

Why our own: `jax2onnx`, the one maintained exporter, pins
`orbax-checkpoint<0.11.37` (we use 0.12), and its files needed repairs before
onnxruntime would load them (stale `value_info` shapes after it drops layout
transposes). Our generators at inference use about thirty primitives, so a
small interpreter over `jax.make_jaxpr` is enough, and it lets us choose the
graph we want:

* every input that is known at export time (the weights and everything
  computed from them: BatchNorm scale and shift, the sub-pixel kernels,
  FFT norms) is folded to a constant with numpy, so the graph holds only
  work on activations;
* broadcasts stay implicit: a constant (C,) bias reshaped to (1, 1, 1, C)
  feeds an ONNX Add, which broadcasts like numpy, instead of an Expand;
* a convolution with `lhs_dilation` (a transposed convolution) becomes a
  native ONNX ConvTranspose with the kernel flipped and transposed here;
* complex values (the FFC's rfft2 / irfft2) are float tensors with a trailing
  axis of 2 (real, imaginary), and the DFTs are exact matrix products (the
  maps they run on are 3x3 to 24x24).

Layout: jax convolutions here are NHWC and ONNX's are NCHW, so each Conv is
wrapped in Transposes; onnxruntime's transpose optimizer cancels the pairs
between consecutive convolutions (see `bench/bench_infer.py --only onnx`).

Unsupported primitives raise `NotImplementedError` naming them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
from jax.extend import core as jcore
import numpy as np

OPSET = 18

# Elementwise primitives: ONNX op, numpy function for constant folding.
_UNARY = {
    "neg": ("Neg", np.negative), "exp": ("Exp", np.exp), "log": ("Log", np.log),
    "sqrt": ("Sqrt", np.sqrt), "abs": ("Abs", np.abs), "tanh": ("Tanh", np.tanh),
    "logistic": ("Sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x))),
    "rsqrt": (None, lambda x: 1.0 / np.sqrt(x)), "square": (None, np.square),
    "floor": ("Floor", np.floor), "ceil": ("Ceil", np.ceil),
    "round": ("Round", np.round),
}
_BINARY = {
    "add": ("Add", np.add), "sub": ("Sub", np.subtract), "mul": ("Mul", np.multiply),
    "div": ("Div", np.divide), "max": ("Max", np.maximum), "min": ("Min", np.minimum),
    "pow": ("Pow", np.power), "gt": ("Greater", np.greater), "lt": ("Less", np.less),
    "ge": ("GreaterOrEqual", np.greater_equal), "le": ("LessOrEqual", np.less_equal),
    "eq": ("Equal", np.equal), "and": ("And", np.logical_and), "or": ("Or", np.logical_or),
}
_IDENTITY = ("stop_gradient", "copy", "copy_p", "optimization_barrier")
_SUBJAXPR = ("jit", "pjit", "custom_jvp_call", "custom_vjp_call", "closed_call",
             "remat", "checkpoint")


@dataclasses.dataclass(frozen=True)
class Tensor:
  """A graph value: its ONNX name and the shape it has in the graph, which
  may have 1s where the jax value is broadcast (implicit broadcasting), and a
  trailing 2 when `complex`."""
  name: str
  shape: tuple[int, ...]
  complex: bool = False


class _Graph:
  """Collects nodes and initializers with fresh names."""

  def __init__(self):
    from onnx import helper, numpy_helper  # pylint: disable=import-outside-toplevel
    self.helper, self.numpy_helper = helper, numpy_helper
    self.nodes, self.initializers, self._n = [], [], 0

  def name(self, hint: str) -> str:
    self._n += 1
    return f"{hint}_{self._n}"

  def const(self, value: np.ndarray, hint: str = "c") -> str:
    value = np.asarray(value)
    if value.dtype == np.float64:
      value = value.astype(np.float32)
    name = self.name(hint)
    self.initializers.append(self.numpy_helper.from_array(value, name))
    return name

  def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None,
         n_out: int = 1, **attrs) -> Any:
    outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
    # Named after its first output: tools (quantisation's node lists) need names.
    self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=outs[0], **attrs))
    return outs[0] if n_out == 1 else outs


def _is_literal(v) -> bool:
  return isinstance(v, jcore.Literal)


def _broadcast_shape(*shapes) -> tuple[int, ...]:
  return tuple(np.broadcast_shapes(*shapes))


def _aligned_shape(operand_shape, params) -> tuple[int, ...]:
  """broadcast_in_dim's operand shape at the output's rank: its axes placed at
  `broadcast_dimensions`, 1 elsewhere (numpy/ONNX broadcasting does the rest)."""
  aligned = [1] * len(params["shape"])
  for d, n in zip(params["broadcast_dimensions"], operand_shape):
    aligned[d] = n
  return tuple(aligned)


def _is_complex(x) -> bool:
  return x.complex if isinstance(x, Tensor) else np.iscomplexobj(x)


class _Translator:
  """Walks a jaxpr; env maps each var to a numpy constant or a `Tensor`."""

  def __init__(self, graph: _Graph, fold_limit: int):
    self.g = graph
    self.fold_limit = fold_limit
    self._current_in_shapes: list[tuple[int, ...]] = []
    self._current_in_shape: tuple[int, ...] = ()

  # --- helpers ---------------------------------------------------------------

  def tensor(self, x, hint="c") -> Tensor:
    """A constant becomes an initializer (kept at its broadcast shape)."""
    if isinstance(x, Tensor):
      return x
    x = np.asarray(x)
    if np.iscomplexobj(x):
      parts = np.stack([x.real, x.imag], -1).astype(np.float32)
      return Tensor(self.g.const(parts, hint), parts.shape[:-1], True)
    return Tensor(self.g.const(x, hint), x.shape)

  def full(self, x, shape) -> Tensor:
    """`x` materialised at `shape` (an Expand only where it is broadcast)."""
    shape = tuple(shape)
    if not isinstance(x, Tensor):
      x = np.asarray(x)
      if x.shape != shape:
        x = np.broadcast_to(x.reshape((1,) * (len(shape) - x.ndim) + x.shape), shape)
      return self.tensor(np.ascontiguousarray(x))
    if x.shape == shape:
      return x
    target = shape + ((2,) if x.complex else ())
    name = self.g.op("Expand", [x.name, self.g.const(np.array(target, np.int64))])
    return Tensor(name, shape, x.complex)

  def reshape(self, x: Tensor, shape) -> Tensor:
    target = tuple(shape) + ((2,) if x.complex else ())
    name = self.g.op("Reshape", [x.name, self.g.const(np.array(target, np.int64))])
    return Tensor(name, tuple(shape), x.complex)

  def transpose(self, x: Tensor, perm) -> Tensor:
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
      return x
    full_perm = perm + ((len(perm),) if x.complex else ())
    name = self.g.op("Transpose", [x.name], perm=list(full_perm))
    return Tensor(name, tuple(x.shape[p] for p in perm), x.complex)

  def matmul(self, a: str, b: str) -> str:
    return self.g.op("MatMul", [a, b])

  def part(self, x: Tensor, index: int) -> Tensor:
    """The real (0) or imaginary (1) part of a complex tensor."""
    name = self.g.op("Gather", [x.name, self.g.const(np.array(index, np.int64))],
                     axis=len(x.shape))
    return Tensor(name, x.shape)

  def make_complex(self, re: Tensor, im: Tensor) -> Tensor:
    shape = _broadcast_shape(re.shape, im.shape)
    re, im = self.full(re, shape), self.full(im, shape)
    axes = self.g.const(np.array([-1], np.int64))
    parts = [self.g.op("Unsqueeze", [t.name, axes]) for t in (re, im)]
    return Tensor(self.g.op("Concat", parts, axis=-1), shape, True)

  # --- the walk --------------------------------------------------------------

  def run(self, jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v):
      return np.asarray(v.val) if _is_literal(v) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
      env[v] = np.asarray(c)
    for v, a in zip(jaxpr.invars, args):
      env[v] = a
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      outs = self.eqn(eqn, ins)
      for v, o in zip(eqn.outvars, outs):
        env[v] = o
    return [read(v) for v in jaxpr.outvars]

  def eqn(self, eqn, ins: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    params = eqn.params
    # The jax shapes of the inputs: a Tensor may be at an implicit broadcast
    # shape, and the shape primitives materialise it first (`full`).
    self._current_in_shapes = [tuple(v.aval.shape) for v in eqn.invars]
    self._current_in_shape = self._current_in_shapes[0] if eqn.invars else ()
    out_avals = [v.aval for v in eqn.outvars]
    if name in _SUBJAXPR:
      sub = params.get("jaxpr") or params.get("call_jaxpr") or params.get("fun_jaxpr")
      if isinstance(sub, jcore.ClosedJaxpr):
        return self.run(sub.jaxpr, sub.consts, ins)
      return self.run(sub, [], ins)
    if name in _IDENTITY:
      return list(ins)
    if all(not isinstance(x, Tensor) for x in ins):
      try:
        folded = self.fold(eqn, ins)
      except TypeError as e:  # e.g. PRNG key arrays, which numpy cannot hold
        raise NotImplementedError(f"ONNX export: cannot evaluate {name!r} at export "
                                  f"time ({e})") from None
      if folded is not None:
        return folded
    method = getattr(self, f"p_{name}", None)
    if method is not None:
      return method(ins, params, out_avals)
    if name in _UNARY:
      return [self.unary(name, ins[0])]
    if name in _BINARY:
      return [self.binary(name, ins[0], ins[1], out_avals[0])]
    raise NotImplementedError(f"ONNX export: no translation for jax primitive {name!r}")

  def fold(self, eqn, ins) -> list[Any] | None:
    """Evaluates an eqn on constants with numpy / eager jax (None: too big)."""
    name = eqn.primitive.name
    if name in _UNARY:
      return [np.asarray(_UNARY[name][1](ins[0]))]
    if name in _BINARY:
      a, b = ins
      return [np.asarray(_BINARY[name][1](a, b))]
    if name == "broadcast_in_dim":  # kept small, broadcast later by its consumers
      return [np.asarray(ins[0]).reshape(_aligned_shape(np.shape(ins[0]), eqn.params))]
    size = max(int(np.prod(a.shape)) for a in (v.aval for v in eqn.outvars))
    if size > self.fold_limit:
      return None
    full_ins = [np.broadcast_to(x, v.aval.shape) if not _is_literal(v) else x
                for x, v in zip(ins, eqn.invars)]
    outs = eqn.primitive.bind(*[jax.numpy.asarray(x) for x in full_ins], **eqn.params)
    outs = outs if eqn.primitive.multiple_results else [outs]
    return [np.asarray(o) for o in outs]

  # --- elementwise -----------------------------------------------------------

  def unary(self, name: str, x) -> Tensor:
    x = self.tensor(x)
    if x.complex and name not in ("neg",):
      raise NotImplementedError(f"ONNX export: {name} of a complex value")
    if name == "rsqrt":
      out = self.g.op("Reciprocal", [self.g.op("Sqrt", [x.name])])
    elif name == "square":
      out = self.g.op("Mul", [x.name, x.name])
    else:
      out = self.g.op(_UNARY[name][0], [x.name])
    return Tensor(out, x.shape, x.complex)

  def binary(self, name: str, a, b, aval) -> Tensor:
    if _is_complex(a) or _is_complex(b):
      return self.complex_binary(name, a, b)
    if name == "max":  # ReLU: onnxruntime fuses Relu (not Max) into the Conv before it
      for x, y in ((a, b), (b, a)):
        if isinstance(x, Tensor) and not isinstance(y, Tensor) and np.all(np.asarray(y) == 0) \
           and x.shape == _broadcast_shape(x.shape, np.shape(y)):
          return Tensor(self.g.op("Relu", [x.name]), x.shape)
    a, b = self.tensor(a), self.tensor(b)
    out = self.g.op(_BINARY[name][0], [a.name, b.name])
    return Tensor(out, _broadcast_shape(a.shape, b.shape))

  def complex_binary(self, name: str, a, b) -> Tensor:
    """Complex add/sub, and mul by a constant whose imaginary part is 0 (the
    FFT norms): both work on the (re, im) pairs directly."""
    if name in ("mul", "div"):
      pairs = ((a, b), (b, a)) if name == "mul" else ((a, b),)
      for x, y in pairs:
        if not isinstance(y, Tensor) and np.all(np.imag(y) == 0):
          x = self.tensor(x)
          yr = np.real(np.asarray(y)).astype(np.float64)
          yr = (1.0 / yr if name == "div" else yr).astype(np.float32)
          yr = yr.reshape(yr.shape + (1,)) if yr.ndim else yr
          out = self.g.op("Mul", [x.name, self.g.const(yr)])
          return Tensor(out, _broadcast_shape(x.shape, np.shape(y)), True)
    if name in ("add", "sub"):
      a, b = self.tensor(a), self.tensor(b)
      if a.complex and b.complex:
        out = self.g.op(_BINARY[name][0], [a.name, b.name])
        return Tensor(out, _broadcast_shape(a.shape, b.shape), True)
    raise NotImplementedError(f"ONNX export: complex {name} of these operands")

  def p_select_n(self, ins, params, out_avals):
    pred, *cases = ins
    if not isinstance(pred, Tensor):
      idx = np.asarray(pred).astype(np.int64)
      if idx.ndim == 0:
        return [cases[int(idx)]]
    if len(cases) != 2:
      raise NotImplementedError("ONNX export: select_n with more than 2 cases")
    p, f, t = self.tensor(pred), self.tensor(cases[0]), self.tensor(cases[1])
    if f.complex or t.complex:
      raise NotImplementedError("ONNX export: select_n of complex values")
    out = self.g.op("Where", [p.name, t.name, f.name])
    return [Tensor(out, _broadcast_shape(p.shape, f.shape, t.shape))]

  def p_convert_element_type(self, ins, params, out_avals):
    x = ins[0]
    new = np.dtype(params["new_dtype"])
    if isinstance(x, Tensor):
      if x.complex or new == np.float32:
        return [x]
      from onnx import helper  # pylint: disable=import-outside-toplevel
      to = helper.np_dtype_to_tensor_dtype(new)
      return [Tensor(self.g.op("Cast", [x.name], to=to), x.shape)]
    return [np.asarray(x).astype(new)]

  # --- shapes ----------------------------------------------------------------

  def p_broadcast_in_dim(self, ins, params, out_avals):
    x = self.tensor(ins[0])
    aligned = _aligned_shape(x.shape, params)
    if aligned != x.shape:
      x = self.reshape(x, aligned)
    return [x]  # broadcast implicitly by its consumers (see `full`)

  def p_reshape(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    return [self.reshape(x, out_avals[0].shape)]

  def p_squeeze(self, ins, params, out_avals):
    return self.p_reshape(ins, params, out_avals)

  def p_expand_dims(self, ins, params, out_avals):
    return self.p_reshape(ins, params, out_avals)

  def p_transpose(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    return [self.transpose(x, params["permutation"])]

  def p_concatenate(self, ins, params, out_avals):
    dim = int(params["dimension"])
    parts = [self.full(x, s) for x, s in zip(ins, self._current_in_shapes)]
    is_complex = any(p.complex for p in parts)
    if is_complex and not all(p.complex for p in parts):
      raise NotImplementedError("ONNX export: concatenating real and complex values")
    out = self.g.op("Concat", [p.name for p in parts], axis=dim)
    return [Tensor(out, tuple(out_avals[0].shape), is_complex)]

  def p_stack(self, ins, params, out_avals):
    axis = int(params["axis"])
    parts = [self.full(x, s) for x, s in zip(ins, self._current_in_shapes)]
    if any(p.complex for p in parts):
      raise NotImplementedError("ONNX export: stacking complex values")
    axes = self.g.const(np.array([axis], np.int64))
    names = [self.g.op("Unsqueeze", [p.name, axes]) for p in parts]
    out = self.g.op("Concat", names, axis=axis) if len(names) > 1 else names[0]
    return [Tensor(out, tuple(out_avals[0].shape))]

  def p_split(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    sizes = self.g.const(np.array([int(s) for s in params["sizes"]], np.int64))
    outs = self.g.op("Split", [x.name, sizes], n_out=len(params["sizes"]),
                     axis=int(params["axis"]))
    outs = outs if isinstance(outs, list) else [outs]
    return [Tensor(o, tuple(a.shape), x.complex) for o, a in zip(outs, out_avals)]

  def p_slice(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    starts = np.array(params["start_indices"], np.int64)
    ends = np.array(params["limit_indices"], np.int64)
    steps = np.array(params["strides"] or [1] * len(starts), np.int64)
    axes = np.arange(len(starts), dtype=np.int64)
    out = self.g.op("Slice", [x.name] + [self.g.const(a) for a in (starts, ends, axes, steps)])
    return [Tensor(out, tuple(out_avals[0].shape), x.complex)]

  def p_rev(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    dims = np.array(params["dimensions"], np.int64)
    big = np.iinfo(np.int64)
    out = self.g.op("Slice", [x.name, self.g.const(np.full(len(dims), -1, np.int64)),
                              self.g.const(np.full(len(dims), big.min, np.int64)),
                              self.g.const(dims), self.g.const(np.full(len(dims), -1, np.int64))])
    return [Tensor(out, x.shape, x.complex)]

  def p_pad(self, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    cfg = [(int(lo), int(hi), int(interior)) for lo, hi, interior in params["padding_config"]]
    if any(i for _, _, i in cfg) or any(lo < 0 or hi < 0 for lo, hi, _ in cfg):
      raise NotImplementedError("ONNX export: interior or negative padding")
    if not any(lo or hi for lo, hi, _ in cfg):
      return [x]
    if x.complex:
      raise NotImplementedError("ONNX export: padding a complex value")
    pads = np.array([lo for lo, _, _ in cfg] + [hi for _, hi, _ in cfg], np.int64)
    value = self.tensor(np.asarray(ins[1], np.float32).reshape(()))
    out = self.g.op("Pad", [x.name, self.g.const(pads), value.name], mode="constant")
    return [Tensor(out, tuple(out_avals[0].shape))]

  def _reduce(self, op_type, ins, params, out_avals):
    x = self.full(ins[0], self._current_in_shape)
    if x.complex:
      raise NotImplementedError(f"ONNX export: {op_type} of a complex value")
    axes = self.g.const(np.array(params["axes"], np.int64))
    out = self.g.op(op_type, [x.name, axes], keepdims=0)
    return [Tensor(out, tuple(out_avals[0].shape))]

  def p_reduce_sum(self, ins, params, out_avals):
    return self._reduce("ReduceSum", ins, params, out_avals)

  def p_reduce_max(self, ins, params, out_avals):
    return self._reduce("ReduceMax", ins, params, out_avals)

  def p_reduce_min(self, ins, params, out_avals):
    return self._reduce("ReduceMin", ins, params, out_avals)

  def p_dot_general(self, ins, params, out_avals):
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    a, b = (self.full(x, s) for x, s in zip(ins, self._current_in_shapes))
    if a.complex or b.complex:
      raise NotImplementedError("ONNX export: dot_general of complex values")
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    la = [next(letters) for _ in a.shape]
    lb_ = [next(letters) for _ in b.shape]
    for i, j in zip(lc, rc):
      lb_[j] = la[i]
    for i, j in zip(lb, rb):
      lb_[j] = la[i]
    out = ([la[i] for i in lb] + [la[i] for i in range(len(la)) if i not in lc and i not in lb]
           + [lb_[j] for j in range(len(lb_)) if j not in rc and j not in rb])
    eq = f"{''.join(la)},{''.join(lb_)}->{''.join(out)}"
    name = self.g.op("Einsum", [a.name, b.name], equation=eq)
    return [Tensor(name, tuple(out_avals[0].shape))]

  def p_clamp(self, ins, params, out_avals):
    lo, x, hi = ins
    x = self.tensor(x)
    out = self.g.op("Max", [x.name, self.tensor(lo).name])
    out = self.g.op("Min", [out, self.tensor(hi).name])
    return [Tensor(out, x.shape)]

  # --- convolution -----------------------------------------------------------

  def p_conv_general_dilated(self, ins, params, out_avals):
    x, w = ins
    dn = params["dimension_numbers"]
    if params["batch_group_count"] != 1:
      raise NotImplementedError("ONNX export: batch_group_count != 1")
    x = self.full(x, self._current_in_shape)
    x = self.transpose(x, dn.lhs_spec)  # NCHW
    groups = int(params["feature_group_count"])
    pads = [(int(lo), int(hi)) for lo, hi in params["padding"]]
    lhs_dil = tuple(int(d) for d in params["lhs_dilation"])
    rhs_dil = tuple(int(d) for d in params["rhs_dilation"])
    if isinstance(w, Tensor):
      raise NotImplementedError("ONNX export: a convolution kernel computed from the inputs")
    w = np.transpose(np.asarray(w, np.float32), dn.rhs_spec)  # OIHW
    k = w.shape[2:]
    if any(d != 1 for d in lhs_dil):
      # A transposed convolution: the forward conv of the zero-stuffed input
      # with kernel w equals ConvTranspose with w flipped, I and O swapped.
      if groups != 1 or any(d != 1 for d in rhs_dil):
        raise NotImplementedError("ONNX export: a grouped or dilated transposed conv")
      begin = [ki - 1 - lo for ki, (lo, _) in zip(k, pads)]
      end = [ki - 1 - hi for ki, (_, hi) in zip(k, pads)]
      if any(b < 0 for b in begin):
        raise NotImplementedError("ONNX export: a transposed conv with this padding")
      out_pad = [max(0, -e) for e in end]
      end = [max(0, e) for e in end]
      wt = np.ascontiguousarray(np.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3))
      y = self.g.op("ConvTranspose", [x.name, self.g.const(wt, "kernel")],
                    strides=list(lhs_dil), pads=begin + end, output_padding=out_pad)
    else:
      if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise NotImplementedError("ONNX export: negative convolution padding")
      y = self.g.op("Conv", [x.name, self.g.const(np.ascontiguousarray(w), "kernel")],
                    strides=[int(s) for s in params["window_strides"]],
                    pads=[lo for lo, _ in pads] + [hi for _, hi in pads],
                    dilations=list(rhs_dil), group=groups, kernel_shape=list(k))
    out_shape = tuple(out_avals[0].shape)
    spec = dn.out_spec
    nchw = Tensor(y, tuple(out_shape[d] for d in spec))
    return [self.transpose(nchw, np.argsort(spec))]

  # --- complex and FFT -------------------------------------------------------

  def p_complex(self, ins, params, out_avals):
    re, im = (self.full(x, s) for x, s in zip(ins, self._current_in_shapes))
    return [self.make_complex(re, im)]

  def p_real(self, ins, params, out_avals):
    return [self.part(self.full(ins[0], self._current_in_shape), 0)]

  def p_imag(self, ins, params, out_avals):
    return [self.part(self.full(ins[0], self._current_in_shape), 1)]

  def p_fft(self, ins, params, out_avals):
    """rfft / irfft over the last one or two axes, as DFT matrix products."""
    kind = str(params["fft_type"]).rsplit(".", 1)[-1].split(":")[0].strip("<> ")
    lengths = tuple(int(n) for n in params["fft_lengths"])
    x = self.full(ins[0], self._current_in_shape)
    if len(lengths) > 2:
      raise NotImplementedError("ONNX export: FFTs over more than 2 axes")
    if kind in ("RFFT", "2"):
      return [self.rfft(x, lengths)]
    if kind in ("IRFFT", "3"):
      return [self.irfft(x, lengths)]
    raise NotImplementedError(f"ONNX export: FFT type {params['fft_type']}")

  def _left(self, a: np.ndarray, x: str) -> str:
    """a (M, H) applied to axis -2 of x (..., H, K)."""
    return self.matmul(self.g.const(a.astype(np.float32)), x)

  def _complex_left(self, a: np.ndarray, re: str, im: str) -> tuple[str, str]:
    ar, ai = a.real, a.imag
    yr = self.g.op("Sub", [self._left(ar, re), self._left(ai, im)])
    yi = self.g.op("Add", [self._left(ar, im), self._left(ai, re)])
    return yr, yi

  def rfft(self, x: Tensor, lengths) -> Tensor:
    w = lengths[-1]
    k = w // 2 + 1
    ang = 2 * np.pi * np.outer(np.arange(w), np.arange(k)) / w  # (W, K)
    re = self.matmul(x.name, self.g.const(np.cos(ang).astype(np.float32)))
    im = self.matmul(x.name, self.g.const((-np.sin(ang)).astype(np.float32)))
    if len(lengths) == 2:
      h = lengths[0]
      a = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
      re, im = self._complex_left(a, re, im)
    shape = x.shape[:-1] + (k,)
    return self.make_complex(Tensor(re, shape), Tensor(im, shape))

  def irfft(self, x: Tensor, lengths) -> Tensor:
    w = lengths[-1]
    k = x.shape[-1]
    re, im = self.part(x, 0).name, self.part(x, 1).name
    if len(lengths) == 2:
      h = lengths[0]
      a = np.exp(2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h) / h
      re, im = self._complex_left(a, re, im)
    # numpy's irfft: bins 0 and W/2 count once, the others twice (Hermitian
    # symmetry); their imaginary parts drop out because sin() is 0 there.
    c = np.full(k, 2.0)
    c[0] = 1.0
    if w % 2 == 0 and k > w // 2:
      c[w // 2] = 1.0
    c[k:] = 0
    ang = 2 * np.pi * np.outer(np.arange(k), np.arange(w)) / w  # (K, W)
    pr = (c[:, None] * np.cos(ang) / w).astype(np.float32)
    pi = (-c[:, None] * np.sin(ang) / w).astype(np.float32)
    out = self.g.op("Add", [self.matmul(re, self.g.const(pr)), self.matmul(im, self.g.const(pi))])
    return Tensor(out, x.shape[:-1] + (w,))


def fold_affine_into_convs(graph: _Graph) -> int:
  """Folds per-channel Add/Sub/Mul/Div by constants that follow a Conv (or
  ConvTranspose) and its NCHW -> NHWC Transpose into the conv's kernel and
  bias: the conv bias and inference BatchNorm become part of the conv.
  Returns how many elementwise nodes were removed."""
  from onnx import numpy_helper  # pylint: disable=import-outside-toplevel
  inits = {t.name: t for t in graph.initializers}
  consumers: dict[str, list[Any]] = {}
  for n in graph.nodes:
    for i in n.input:
      consumers.setdefault(i, []).append(n)
  removed, dropped = 0, set()

  def per_channel(name: str, channels: int) -> np.ndarray | None:
    if name not in inits:
      return None
    c = numpy_helper.to_array(inits[name]).astype(np.float64)
    if c.size == 1:
      return np.full(channels, float(c.reshape(())))
    if c.shape[-1] == channels and c.size == channels:
      return c.reshape(channels)
    return None

  for conv in [n for n in graph.nodes if n.op_type in ("Conv", "ConvTranspose")]:
    users = consumers.get(conv.output[0], [])
    if len(users) != 1 or users[0].op_type != "Transpose":
      continue
    transpose = users[0]
    perm = list(transpose.attribute[0].ints)
    if perm != [0, 2, 3, 1] or conv.input[1] not in inits:
      continue
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    out_axis = 0 if conv.op_type == "Conv" else 1
    channels = w.shape[out_axis]
    scale, shift = np.ones(channels), np.zeros(channels)
    if len(conv.input) > 2:
      shift = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
    tail, chain = transpose.output[0], []
    while True:
      users = consumers.get(tail, [])
      if len(users) != 1 or users[0].op_type not in ("Add", "Sub", "Mul", "Div"):
        break
      node = users[0]
      if node.input[0] != tail:
        if node.op_type in ("Sub", "Div"):
          break
        other = node.input[0]
      else:
        other = node.input[1]
      c = per_channel(other, channels)
      if c is None:
        break
      if node.op_type == "Add":
        shift = shift + c
      elif node.op_type == "Sub":
        shift = shift - c
      elif node.op_type == "Mul":
        scale, shift = scale * c, shift * c
      else:
        scale, shift = scale / c, shift / c
      chain.append(node)
      tail = node.output[0]
    if not chain:
      continue
    shape = [1] * w.ndim
    shape[out_axis] = channels
    w = (w * scale.reshape(shape)).astype(np.float32)
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w, conv.input[1]))
    bias = graph.const(shift.astype(np.float32), "bias")
    inits[bias] = graph.initializers[-1]
    del conv.input[2:]
    conv.input.append(bias)
    # The chain's last output is now the Transpose's.
    transpose.output[0] = tail
    dropped.update(id(n) for n in chain)
    removed += len(chain)
  graph.nodes = [n for n in graph.nodes if id(n) not in dropped]
  return removed


def to_onnx(fn: Callable[..., Any], example_args: Sequence[np.ndarray],
            input_names: Sequence[str], output_names: Sequence[str],
            doc: str = "", metadata: dict[str, str] | None = None,
            fold_limit: int = 1 << 27):
  """The ONNX model (`onnx.ModelProto`, opset 18) of `fn` at the shapes and
  dtypes of `example_args` (float32 arrays; fixed shapes).

  Everything `fn` closes over (the weights) is folded into initializers.

  Raises:
    NotImplementedError: `fn` uses a primitive with no translation here.
  """
  from onnx import helper, TensorProto  # pylint: disable=import-outside-toplevel
  closed = jax.make_jaxpr(fn)(*example_args)
  graph = _Graph()
  tr = _Translator(graph, fold_limit)
  inputs = [Tensor(n, tuple(np.shape(a))) for n, a in zip(input_names, example_args)]
  outs = tr.run(closed.jaxpr, closed.consts, inputs)
  outputs = []
  for name, out, var in zip(output_names, outs, closed.jaxpr.outvars):
    t = tr.full(out, var.aval.shape)
    if t.complex:
      raise NotImplementedError("ONNX export: a complex output")
    graph.nodes.append(helper.make_node("Identity", [t.name], [name]))
    outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                 list(var.aval.shape)))
  fold_affine_into_convs(graph)
  used = {i for n in graph.nodes for i in n.input}
  graph.initializers = [t for t in graph.initializers if t.name in used]
  graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(np.shape(a)))
                  for n, a in zip(input_names, example_args)]
  g = helper.make_graph(graph.nodes, "lipsync_jax", graph_inputs, outputs,
                        initializer=graph.initializers, doc_string=doc)
  model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                            producer_name="lipsync_jax")
  model.ir_version = 9  # onnxruntime 1.2x reads IR 9 (opset 18)
  for k, v in (metadata or {}).items():
    entry = model.metadata_props.add()
    entry.key, entry.value = k, str(v)
  return model
