"""Variant models (variants.md): SyncTalkFace and the AU-driven TCN generator.

Parameter counts and shapes at full width through `jax.eval_shape` (no
compute); real forwards only at tiny widths, each group compiled once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import losses, models
from lipsync_jax.models import au_tcn, synctalkface
from lipsync_jax.models.synctalkface import SyncTalkFace, SyncTalkFaceOutput

TINY = 0.0625


def _zeros(*shape):
  return jnp.zeros(shape, jnp.float32)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _abstract(module, *args, **kwargs):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))


def _random_variables(module, *args, seed: int = 0):
  """Variables shaped by `module.init(*args)`, filled with numpy (no init compile).

  He-normal kernels, unit BN/LayerNorm scales and variances, N(0, 0.5)
  memories, unit weight-norm gains, N(0, 0.05) elsewhere.
  """
  rng = np.random.default_rng(seed)
  shapes = _abstract(module, *args)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("kernel", "weight_v"):
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
    if name in ("key_memory", "value_memory"):
      return rng.normal(0.0, 0.5, leaf.shape).astype(np.float32)
    if name in ("scale", "var", "weight_g"):
      return np.ones(leaf.shape, np.float32)
    return rng.normal(0.0, 0.05, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _np(x):
  return np.asarray(x, np.float64)


# -----------------------------------------------------------------------------
# SyncTalkFace: counts and shapes at full width.
# -----------------------------------------------------------------------------

STF_COUNTS = {  # variants.md A3
    "synctalkface": dict(size=96, total=45_654_963, identity=8_171_056, lip=8_208_512,
                         decoder=25_291_072),
    "synctalkface_paper": dict(size=128, total=52_994_995, identity=10_006_064,
                               lip=10_043_520, decoder=28_961_088),
}


@pytest.mark.parametrize("arch", sorted(STF_COUNTS))
def test_synctalkface_parameter_counts(arch):
  spec = STF_COUNTS[arch]
  s = spec["size"]
  model = models.create(arch)
  assert model.image_size == s
  # init with the inference inputs only still creates the training-only parts.
  params = _abstract(model, _zeros(1, 80, 16, 1), _zeros(1, s, s, 6))["params"]
  assert _count(params) == spec["total"]
  assert _count(params["audio_encoder"]) == 2_812_672
  assert _count(params["identity_encoder"]) == spec["identity"]
  assert _count(params["lip_encoder"]) == spec["lip"]
  dec = params["decoder"]
  assert _count({k: v for k, v in dec.items() if k.startswith("face_decoder_")}) == spec["decoder"]
  assert _count({k: v for k, v in dec.items() if k.startswith("output_block_")}) == 23_235
  mem = params["memory"]
  assert _count(mem) == 1_148_416
  assert mem["key_memory"].shape == mem["value_memory"].shape == (96, 512)
  assert _count(mem["q_embd"]) + _count(mem["v_embd"]) == 525_312
  assert _count(mem["fusion"]) == 524_800
  assert mem["fusion"]["kernel"].shape == (1024, 512)
  # Wav2Lip's parts are Wav2Lip's at 96: 36,298,035 = total - lip - memory.
  if s == 96:
    assert spec["total"] - spec["lip"] - 1_148_416 == 36_298_035


@pytest.mark.parametrize("arch", sorted(STF_COUNTS))
def test_synctalkface_layer_shapes(arch):
  s = STF_COUNTS[arch]["size"]
  model = models.create(arch)
  args = (_zeros(2, 80, 16, 1), _zeros(2, s, s, 6), _zeros(2, 5, s, s, 3))
  variables = _abstract(model, *args)
  _, state = jax.eval_shape(
      lambda v: model.apply(v, *args, capture_intermediates=True, mutable=["intermediates"]),
      variables)
  inter = state["intermediates"]
  shape = lambda mod, name: inter[mod][name]["__call__"][0].shape
  # Lip encoder (A3.3): l0 squeezes time; l1..l5 end in 1x1x512.
  lip = [shape("lip_encoder", "layers_0")] + [
      shape("lip_encoder", name) for name in
      ("layers_1_3", "layers_2_2", "layers_3_2", "layers_4_1", "layers_5_1")]
  assert lip == [(2, s // 2, s // 2, 64), (2, s // 4, s // 4, 64), (2, s // 8, s // 8, 128),
                 (2, s // 16, s // 16, 256), (2, s // 32, s // 32, 512), (2, 1, 1, 512)]
  # Identity encoder skips: S, S/2, ..., S/32, 1 (128/64/32/16/8/4/1 at 128).
  skips = inter["identity_encoder"]["__call__"][0]
  assert [f.shape[1] for f in skips] == [s, s // 2, s // 4, s // 8, s // 16, s // 32, 1]
  # Decoder: the first transposed conv takes 1 -> S/32, then x2 to S; two
  # calls (key and value paths).
  dec = inter["decoder"]
  assert len(dec["face_decoder_blocks_1_0"]["__call__"]) == 2
  assert [dec[f"face_decoder_blocks_{i}_0"]["__call__"][0].shape[1] for i in range(1, 7)] == [
      s // 32, s // 16, s // 8, s // 4, s // 2, s]
  assert inter["memory"]["fusion"]["__call__"][0].shape == (2, 512)


def test_synctalkface_call_forms():
  model = models.create("synctalkface")
  variables = _abstract(model, _zeros(1, 80, 16, 1), _zeros(1, 96, 96, 6))
  a5, f5, l5 = _zeros(2, 5, 80, 16, 1), _zeros(2, 5, 96, 96, 6), _zeros(2, 5, 5, 96, 96, 3)
  # Inference: Wav2Lip's contract, no lip input.
  out = jax.eval_shape(lambda v: model.apply(v, a5, f5), variables)
  assert out.shape == (2, 5, 96, 96, 3) and out.dtype == jnp.float32
  assert jax.eval_shape(lambda v: model.apply(v, a5[0], f5[0]), variables).shape == (5, 96, 96, 3)
  aux = jax.eval_shape(lambda v: model.apply(v, a5, f5, return_aux=True), variables)
  assert aux.value_images is None and aux.audio_address.shape == (2, 5, 96)
  # Training: both paths and everything the losses need.
  train = lambda a, f, l: jax.eval_shape(
      lambda v: model.apply(v, a, f, l, train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(1)})[0], variables)
  out = train(a5, f5, l5)
  assert isinstance(out, SyncTalkFaceOutput)
  assert out.images.shape == out.value_images.shape == (2, 5, 96, 96, 3)
  assert out.audio_address.shape == out.lip_address.shape == (2, 5, 96)
  for feat in (out.key_recall, out.lip_feature, out.lip_query, out.value_recall):
    assert feat.shape == (2, 5, 512) and feat.dtype == jnp.float32
  out4 = train(a5[0], f5[0], l5[0])
  assert out4.value_images.shape == (5, 96, 96, 3) and out4.lip_address.shape == (5, 96)
  emb = jax.eval_shape(lambda v: model.apply(v, l5, method=SyncTalkFace.encode_lip), variables)
  assert emb.shape == (2, 5, 512)
  # bf16 compute keeps float32 outputs and addresses.
  bf = models.create("synctalkface", dtype=jnp.bfloat16)
  out = jax.eval_shape(lambda v: bf.apply(v, a5, f5, l5), variables)
  assert {x.dtype for x in jax.tree_util.tree_leaves(out)} == {jnp.dtype("float32")}


def test_synctalkface_bad_inputs_and_config():
  model = models.create("synctalkface")
  variables = _abstract(model, _zeros(1, 80, 16, 1), _zeros(1, 96, 96, 6))
  run = lambda *args: jax.eval_shape(lambda v: model.apply(v, *args), variables)
  with pytest.raises(ValueError, match="faces must be"):
    run(_zeros(1, 80, 16, 1), _zeros(1, 128, 128, 6))
  with pytest.raises(ValueError, match="lip"):
    run(_zeros(2, 5, 80, 16, 1), _zeros(2, 5, 96, 96, 6), _zeros(2, 5, 96, 96, 3))
  with pytest.raises(ValueError, match="lip window must have 5"):
    run(_zeros(2, 80, 16, 1), _zeros(2, 96, 96, 6), _zeros(2, 4, 96, 96, 3))
  for bad in (dict(image_size=100), dict(output_activation="relu"),
              dict(value_path_source="nope"), dict(memory_dim=256, value_path_source="raw")):
    with pytest.raises(ValueError):
      _abstract(models.create("synctalkface", **bad), _zeros(1, 80, 16, 1),
                _zeros(1, 96, 96, 6))
  # Memory size and options are config: 48 slots, no projections, raw value path.
  small = models.create("synctalkface", memory_slots=48, query_proj=False, value_proj=False,
                        value_path_source="raw")
  mem = _abstract(small, _zeros(1, 80, 16, 1), _zeros(1, 96, 96, 6))["params"]["memory"]
  assert set(mem) == {"key_memory", "value_memory", "fusion"}
  assert mem["key_memory"].shape == (48, 512)


# -----------------------------------------------------------------------------
# SyncTalkFace: tiny real forwards (one compile).
# -----------------------------------------------------------------------------

SLOTS = (0, 5, 17)


@pytest.fixture(scope="module")
def tiny_stf():
  model = models.create("synctalkface", width_multiplier=TINY)
  fused = models.create("synctalkface", width_multiplier=TINY, fuse_paths_in_batch=True)
  rng = np.random.default_rng(0)
  b, t = 2, 2
  audio = jnp.asarray(rng.normal(size=(b, t, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(b, t, 96, 96, 6)), jnp.float32)
  frames = jnp.asarray(rng.uniform(size=(b, t + 4, 96, 96, 3)), jnp.float32)
  lip = synctalkface.lip_windows(frames)
  variables = _random_variables(model, audio[0], faces[0])

  @jax.jit
  def run(variables, audio, faces, lip):
    f4, a4 = faces[:, 0], audio[:, 0]
    res = {
        "infer": model.apply(variables, audio, faces),
        "aux": model.apply(variables, audio, faces, return_aux=True),
        "eval_lip": model.apply(variables, audio, faces, lip),
        "fused_eval_lip": fused.apply(variables, audio, faces, lip),
        "f_aud": model.apply(variables, a4, method=SyncTalkFace.embed_audio),
        "f_lip": model.apply(variables, lip[:, 0], method=SyncTalkFace.encode_lip),
        "forced": model.apply(variables, f4, a4, SLOTS, method=SyncTalkFace.forced_slot_decode),
        "forced_silent": model.apply(variables, f4, None, SLOTS[:1],
                                     method=SyncTalkFace.forced_slot_decode),
        "onehot": model.apply(variables, f4, jax.nn.one_hot(jnp.full((b,), SLOTS[1]), 96),
                              a4, method=SyncTalkFace.decode_with_address),
    }
    res["readdressed"] = model.apply(variables, f4, res["aux"].audio_address[:, 0], a4,
                                     method=SyncTalkFace.decode_with_address)
    res["train"], res["updates"] = model.apply(
        variables, audio, faces, lip, train=True, mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(3)})
    return res

  return model, variables, jax.device_get(run(variables, audio, faces, lip))


def test_tiny_synctalkface_inference_without_lip(tiny_stf):
  _, _, res = tiny_stf
  out = res["infer"]
  assert out.shape == (2, 2, 96, 96, 3)
  assert np.all((out >= 0) & (out <= 1)) and np.all(np.isfinite(out))
  np.testing.assert_array_equal(res["aux"].images, out)
  # With lip windows, eval mode: the key path is the inference output.
  np.testing.assert_allclose(res["eval_lip"].images, out, rtol=1e-5, atol=1e-6)


def test_tiny_synctalkface_memory_math(tiny_stf):
  _, variables, res = tiny_stf
  mem = variables["params"]["memory"]
  # A_aud = softmax(16 cos(q_embd(f_aud), M_aud)), recomputed in numpy.
  q = _np(res["f_aud"]) @ _np(mem["q_embd"]["kernel"]) + _np(mem["q_embd"]["bias"])
  keys = _np(mem["key_memory"])
  cos = (q / np.linalg.norm(q, axis=-1, keepdims=True)) @ (
      keys / np.linalg.norm(keys, axis=-1, keepdims=True)).T
  expected = np.exp(16 * cos - (16 * cos).max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  aux = res["aux"]
  np.testing.assert_allclose(aux.audio_address[:, 0], expected, rtol=1e-4, atol=1e-6)
  # The key address reads the *value* memory.
  np.testing.assert_allclose(aux.key_recall, _np(aux.audio_address) @ _np(mem["value_memory"]),
                             rtol=1e-4, atol=1e-5)
  # Value path: A_lip from v_embd(f_lip) against M_lip, recall A_lip M_lip.
  out = res["eval_lip"]
  v = _np(res["f_lip"]) @ _np(mem["v_embd"]["kernel"]) + _np(mem["v_embd"]["bias"])
  np.testing.assert_allclose(out.lip_query[:, 0], v, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.lip_feature[:, 0], res["f_lip"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.value_recall, _np(out.lip_address) @ _np(mem["value_memory"]),
                             rtol=1e-4, atol=1e-5)
  for address in (out.audio_address, out.lip_address):
    assert address.shape == (2, 2, 96)
    np.testing.assert_allclose(address.sum(-1), 1.0, rtol=1e-5)
  assert np.all(res["f_lip"] >= 0)  # the lip encoder ends in a ReLU
  # Both decoding paths in [0, 1]; different lip features give different frames.
  assert np.all((out.value_images >= 0) & (out.value_images <= 1))
  assert not np.allclose(out.value_images, out.images)


def test_tiny_synctalkface_forced_address_decode(tiny_stf):
  _, _, res = tiny_stf
  forced = res["forced"]
  assert forced.shape == (len(SLOTS), 2, 96, 96, 3)
  assert np.all((forced >= 0) & (forced <= 1))
  # Row k is the decode with a one-hot address on slot SLOTS[k].
  np.testing.assert_allclose(forced[1], res["onehot"], rtol=1e-5, atol=1e-6)
  # Different slots, different mouths.
  assert not np.allclose(forced[0], forced[1]) and not np.allclose(forced[1], forced[2])
  # Decoding with the audio's own address reproduces the inference output.
  np.testing.assert_allclose(res["readdressed"], res["infer"][:, 0], rtol=1e-5, atol=1e-6)
  assert res["forced_silent"].shape == (1, 2, 96, 96, 3)


def test_tiny_synctalkface_training_and_fused_paths(tiny_stf):
  _, variables, res = tiny_stf
  out = res["train"]
  for images in (out.images, out.value_images):
    assert images.shape == (2, 2, 96, 96, 3)
    assert np.all((images >= 0) & (images <= 1)) and np.all(np.isfinite(images))
  # Batch statistics of every BN layer, the lip encoder's included, move.
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                   res["updates"]["batch_stats"], variables["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  assert "lip_encoder" in res["updates"]["batch_stats"]
  # Eval mode (running statistics, no dropout): one 2N decode == two decodes.
  sep, fused = res["eval_lip"], res["fused_eval_lip"]
  np.testing.assert_allclose(fused.images, sep.images, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused.value_images, sep.value_images, rtol=1e-5, atol=1e-6)


def test_tiny_synctalkface_paper_preset_tanh():
  model = models.create("synctalkface_paper", width_multiplier=TINY)
  assert model.pixel_range == (-1.0, 1.0) and model.mask_value == 0.0
  rng = np.random.default_rng(1)
  audio = jnp.asarray(rng.normal(size=(1, 2, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(-1, 1, size=(1, 2, 128, 128, 6)), jnp.float32)
  variables = _random_variables(model, audio[0], faces[0])
  out = np.asarray(jax.jit(model.apply)(variables, audio, faces))
  assert out.shape == (1, 2, 128, 128, 3)
  assert np.all((out >= -1) & (out <= 1)) and out.min() < 0 < out.max()


def test_lip_windows_and_mask():
  frames = jnp.arange(1 * 7 * 4 * 2 * 1, dtype=jnp.float32).reshape(1, 7, 4, 2, 1) + 1
  win = np.asarray(synctalkface.lip_windows(frames, mask_value=-1.0))
  assert win.shape == (1, 3, 5, 4, 2, 1)
  np.testing.assert_array_equal(win[:, :, :, :2], -1.0)
  np.testing.assert_array_equal(win[0, 2, :, 2:], np.asarray(frames)[0, 2:7, 2:])


def test_from_wav2lip_transplant():
  args = (_zeros(1, 80, 16, 1), _zeros(1, 96, 96, 6))
  w2l = _abstract(models.create("wav2lip"), *args)
  for model, model_args in ((models.create("synctalkface"), args),
                            (models.create("au_tcn"), (_zeros(1, 2, 80, 16, 1),
                                                       _zeros(1, 2, 96, 96, 6)))):
    variables = _abstract(model, *model_args)
    merged = synctalkface.from_wav2lip(variables, w2l)
    for col in ("params", "batch_stats"):
      assert merged[col]["identity_encoder"]["face_encoder_blocks_6_0"] is (
          w2l[col]["face_encoder_blocks_6_0"])
      assert merged[col]["decoder"]["output_block_0"] is w2l[col]["output_block_0"]
      assert merged[col]["audio_encoder"] is w2l[col]["audio_encoder"]
      assert jax.tree_util.tree_structure(merged[col]) == jax.tree_util.tree_structure(
          variables[col])
  paper = _abstract(models.create("synctalkface_paper"), _zeros(1, 80, 16, 1),
                    _zeros(1, 128, 128, 6))
  with pytest.raises(ValueError, match="does not match"):
    synctalkface.from_wav2lip(paper, w2l)


# -----------------------------------------------------------------------------
# Memory losses.
# -----------------------------------------------------------------------------


def test_memory_alignment_kl():
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(6), size=(2, 3)).astype(np.float32)
  q = rng.dirichlet(np.ones(6), size=(2, 3)).astype(np.float32)
  p[0, 0] = [0.5, 0.5, 0, 0, 0, 0]  # empty slots add 0 (xlogy)
  expected = np.mean(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
                            - p * np.log(q + 1e-13), axis=-1))
  kl = losses.memory_alignment_kl(p, q)
  assert kl.dtype == jnp.float32
  np.testing.assert_allclose(kl, expected, rtol=1e-5)
  np.testing.assert_allclose(losses.memory_alignment_kl(q, q), 0.0, atol=1e-6)
  gp, gq = jax.grad(losses.memory_alignment_kl, argnums=(0, 1))(jnp.asarray(p), jnp.asarray(q))
  assert np.all(np.asarray(gp) == 0)  # A_lip is stop-gradient
  np.testing.assert_allclose(gq, -p / (q + 1e-13) / 6, rtol=1e-4)  # mean over 2*3 rows


def test_memory_store_loss():
  rng = np.random.default_rng(1)
  recall = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  query = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  np.testing.assert_allclose(losses.memory_store_loss(recall, query),
                             np.mean((np.asarray(recall) - np.asarray(query)) ** 2), rtol=1e-6)
  g_recall, g_query = jax.grad(losses.memory_store_loss, argnums=(0, 1))(recall, query)
  assert np.all(np.asarray(g_query) == 0)  # the target is stop-gradient
  np.testing.assert_allclose(g_recall, 2 * (recall - query) / recall.size, rtol=1e-5)


# -----------------------------------------------------------------------------
# AU-TCN: shapes at full width.
# -----------------------------------------------------------------------------


def test_au_tcn_shapes_and_parts():
  model = models.create("au_tcn")
  assert model.mode == "inpaint"
  a5, f5 = _zeros(2, 5, 80, 16, 1), _zeros(2, 5, 96, 96, 6)
  variables = _abstract(model, a5, f5)
  params = variables["params"]
  # Wav2Lip-shaped parts (B3: unchanged).
  assert _count(params["audio_encoder"]) == 2_812_672
  assert _count(params["identity_encoder"]) == 8_171_056
  assert _count(params["decoder"]) == 25_291_072 + 23_235
  # TCSAN: input [a; u; v] = 512 + 5*64 + 512 = 1344 -> 512 -> 512, k3.
  fusion = params["fusion"]
  assert fusion["levels_0"]["conv1"]["weight_v"].shape == (3, 1344, 512)
  assert fusion["levels_0"]["downsample"]["kernel"].shape == (1, 1344, 512)
  assert fusion["levels_1"]["conv2"]["weight_v"].shape == (3, 512, 512)
  assert "downsample" not in fusion["levels_1"]
  assert fusion["levels_1"]["attention"]["query"]["kernel"].shape == (512, 4 * 128)
  # Audio-to-AU: shared trunk, one head per AU, and the standalone module has
  # the same tree (stage-2 weights load as they are).
  a2au = params["audio_to_au"]
  assert set(a2au) == {"trunk"} | {f"head_au{n}" for n in (10, 14, 20, 25, 26)}
  alone = _abstract(models.create("audio_to_au"), a5)["params"]
  assert jax.tree_util.tree_structure(alone) == jax.tree_util.tree_structure(a2au)
  assert _count(alone) == _count(a2au)

  for t in (5, 1, 50):  # any sequence length
    out = jax.eval_shape(
        lambda v: model.apply(v, _zeros(2, t, 80, 16, 1), _zeros(2, t, 96, 96, 6),
                              return_aux=True), variables)
    assert out.images.shape == (2, t, 96, 96, 3) and out.images.dtype == jnp.float32
    assert out.au_logits.shape == (2, t, 5) and out.au_features.shape == (2, t, 320)

  one_shot = models.create("au_tcn", mode="one_shot")
  v1 = _abstract(one_shot, a5, _zeros(2, 96, 96, 3))
  assert _count(v1["params"]) == _count(params)  # same weights, other input
  assert jax.eval_shape(lambda v: one_shot.apply(v, a5, _zeros(2, 96, 96, 3)),
                        v1).shape == (2, 5, 96, 96, 3)
  with pytest.raises(ValueError, match="one_shot mode needs"):
    jax.eval_shape(lambda v: one_shot.apply(v, a5, f5), v1)
  with pytest.raises(ValueError, match="inpaint mode needs"):
    jax.eval_shape(lambda v: model.apply(v, a5, _zeros(2, 96, 96, 3)), variables)
  with pytest.raises(ValueError, match="mode must be"):
    _abstract(models.create("au_tcn", mode="nope"), a5, f5)
  # bf16 compute: float32 parameters and outputs.
  bf = models.create("au_tcn", dtype=jnp.bfloat16)
  out = jax.eval_shape(lambda v: bf.apply(v, a5, f5, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.key(0)}, return_aux=True)[0],
                       variables)
  assert out.images.dtype == out.au_logits.dtype == jnp.float32


def test_audio_to_au_trunk_shapes_and_options():
  model = models.create("audio_to_au")
  a = _zeros(2, 7, 80, 16, 1)
  variables = _abstract(model, a)
  (u, logits), state = jax.eval_shape(
      lambda v: model.apply(v, a, capture_intermediates=True, mutable=["intermediates"]),
      variables)
  assert u.shape == (2, 7, 320) and logits.shape == (2, 7, 5)
  trunk = state["intermediates"]["trunk"]
  assert [trunk[f"layers_{i}"]["__call__"][0].shape[1:] for i in range(5)] == [
      (40, 16, 16), (20, 8, 32), (10, 4, 64), (5, 2, 128), (1, 1, 256)]
  assert trunk["lstm_1"]["__call__"][0].shape == (2, 7, 256)  # BiLSTM, hidden 128
  # Per-AU networks: one trunk per AU; a configurable AU list.
  per_au = _abstract(models.create("audio_to_au", per_au_networks=True), a)["params"]
  assert {k for k in per_au if k.startswith("trunk")} == {
      f"trunk_au{n}" for n in (10, 14, 20, 25, 26)}
  ext = models.create("audio_to_au", aus=au_tcn.LOWER_FACE_AUS)
  v_ext = _abstract(ext, a)
  assert jax.eval_shape(lambda v: ext.apply(v, a), v_ext)[1].shape == (2, 7, 9)


def test_au_tcn_channel_attention_needs_fixed_length():
  model = models.create("au_tcn", attention_axis="channel", seq_len=5)
  a5, f5 = _zeros(1, 5, 80, 16, 1), _zeros(1, 5, 96, 96, 6)
  variables = _abstract(model, a5, f5)
  # Tokens are channels; the feature axis is time (d_model = T = 5), head dim 14.
  attn = variables["params"]["fusion"]["levels_0"]["attention"]
  assert attn["query"]["kernel"].shape == (5, 4 * 14)
  assert jax.eval_shape(lambda v: model.apply(v, a5, f5), variables).shape == (1, 5, 96, 96, 3)
  with pytest.raises(ValueError, match="built for T = 5"):
    jax.eval_shape(lambda v: model.apply(v, _zeros(1, 6, 80, 16, 1),
                                         _zeros(1, 6, 96, 96, 6)), variables)
  with pytest.raises(ValueError, match="fixed seq_len"):
    _abstract(models.create("au_tcn", attention_axis="channel"), a5, f5)


def test_au_classifier():
  model = models.create("au_classifier")
  variables = _abstract(model, _zeros(1, 48, 96, 3))
  assert _count(variables["params"]) == 390_661  # 4 CBR (32-64-128-256) + FC 256->5
  assert jax.eval_shape(lambda v: model.apply(v, _zeros(4, 48, 96, 3)),
                        variables).shape == (4, 5)
  assert jax.eval_shape(lambda v: model.apply(v, _zeros(2, 5, 48, 96, 3)),
                        variables).shape == (2, 5, 5)
  full = models.create("au_classifier", crop_lower_half=True, aus=(25, 26))
  vf = _abstract(full, _zeros(1, 96, 96, 3))
  _, state = jax.eval_shape(
      lambda v: full.apply(v, _zeros(3, 96, 96, 3), capture_intermediates=True,
                           mutable=["intermediates"]), vf)
  assert state["intermediates"]["layers_0"]["__call__"][0].shape == (3, 24, 48, 32)
  assert state["intermediates"]["__call__"][0].shape == (3, 2)


# -----------------------------------------------------------------------------
# AU-TCN: tiny real forwards (one compile).
# -----------------------------------------------------------------------------


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_tiny_au_tcn_any_length_non_causal_one_shot_frozen_a2au():
  model = models.create("au_tcn", width_multiplier=TINY)
  one_shot = models.create("au_tcn", width_multiplier=TINY, mode="one_shot")
  rng = np.random.default_rng(2)
  audio = jnp.asarray(rng.normal(size=(1, 7, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(1, 7, 96, 96, 6)), jnp.float32)
  variables = _random_variables(model, audio[:, :5], faces[:, :5])
  identity = faces[:, 0, ..., 3:]

  @jax.jit
  def run(variables, audio, faces, identity):
    res = {
        "t7": model.apply(variables, audio, faces, return_aux=True),
        "t3": model.apply(variables, audio[:, :3], faces[:, :3]),
        # The last frame's audio changes: every frame may change (non-causal).
        "t7_late": model.apply(variables, audio.at[:, -1].multiply(-1.0), faces),
        "one_shot": one_shot.apply(variables, audio[:, :4], identity),
        "one_shot_as_inpaint": model.apply(
            variables, audio[:, :4],
            jnp.broadcast_to(jnp.concatenate([identity, identity], -1)[:, None],
                             (1, 4, 96, 96, 6))),
    }

    def loss(params):
      out, _ = model.apply({**variables, "params": params}, audio[:, :3], faces[:, :3],
                           train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.key(0)})
      return jnp.mean(out)

    res["grads"] = jax.grad(loss)(variables["params"])
    return res

  res = jax.device_get(run(variables, audio, faces, identity))
  out7 = res["t7"]
  assert out7.images.shape == (1, 7, 96, 96, 3) and res["t3"].shape == (1, 3, 96, 96, 3)
  for images in (out7.images, res["t3"], res["one_shot"]):
    assert np.all((images >= 0) & (images <= 1)) and np.all(np.isfinite(images))
  assert out7.au_logits.shape == (1, 7, 5) and out7.au_features.shape == (1, 7, 5 * 4)
  # Non-causal: a change in the last frame's audio reaches the first frame.
  assert not np.allclose(res["t7_late"][:, 0], out7.images[:, 0])
  # One-shot = inpainting with the identity image twice in every frame.
  assert res["one_shot"].shape == (1, 4, 96, 96, 3)
  np.testing.assert_allclose(res["one_shot"], res["one_shot_as_inpaint"], rtol=1e-4, atol=1e-4)
  # The audio-to-AU module is frozen by default; the rest trains.
  grads = res["grads"]
  assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(grads["audio_to_au"]))
  for group in ("audio_encoder", "identity_encoder", "fusion", "decoder"):
    assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(grads[group])), group


def test_create_registers_variants():
  assert set(models.VARIANT_GENERATORS) <= set(models.ARCHS)
  assert not set(models.VARIANT_GENERATORS) & set(models.GENERATORS)
  assert models.create("synctalkface").output_activation == "sigmoid"
  paper = models.create("synctalkface_paper")
  assert (paper.image_size, paper.output_activation, paper.pixel_range) == (128, "tanh", (-1, 1))
  assert models.create("au_tcn", mode="one_shot").mode == "one_shot"
  with pytest.raises(ValueError, match="bad config"):
    models.create("synctalkface", nope=1)
