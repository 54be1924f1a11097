"""lipsync_jax.machine: the machine named beside every timing."""

from __future__ import annotations

from lipsync_jax import machine

_AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse4_2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse4_2 avx avx2 fma
"""


def test_describe_names_the_cpu_and_whether_it_has_avx512(tmp_path):
  path = tmp_path / "cpuinfo"
  path.write_text(_AVX2_ONLY)
  info = machine.describe(str(path))
  assert info["cpu"] == "AMD EPYC 7B12"
  assert info["vector_extensions"] == ["sse4_2", "avx", "avx2", "fma"]
  assert info["avx512"] is False and info["cores"] >= 1
  line = machine.one_line(info)
  assert "AMD EPYC 7B12" in line and "no AVX-512" in line and "avx2" in line
  path.write_text(_AVX2_ONLY.replace("fma", "fma avx512f avx512bw"))
  info = machine.describe(str(path))
  assert info["avx512"] is True and "avx512bw" in info["vector_extensions"]
  assert "AVX-512" in machine.one_line(info)


def test_describe_without_cpuinfo_still_answers(tmp_path):
  info = machine.describe(str(tmp_path / "missing"))
  assert info["avx512"] is None and info["vector_extensions"] == [] and info["cpu"]
  assert "ISA unknown" in machine.one_line(info)
