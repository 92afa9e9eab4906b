"""Which training precision this machine runs fast: `precision='auto'` is resolved here, on the
machine that trains (a Kubeflow pod, not the machine that compiled the pipeline).

Why it matters: bfloat16 is only fast where the hardware has it (AVX512_BF16, AMX, ARM bf16, a
GPU of compute capability 8.0 and up). Where it is not, TensorFlow emulates it and a step runs
several times *slower* than in float32. Measured figures: the bench-precision and profile-step
blocks of docs/benchmarks.md.
"""
from __future__ import annotations

import logging
import platform
from typing import Iterable, List, Optional, Sequence, Set, Tuple

PRECISIONS = ('auto', 'float32', 'mixed_bfloat16', 'mixed_float16')
# CPU feature flags (as /proc/cpuinfo spells them) that give native bfloat16 matmuls.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16', 'bf16')  # x86: the first two; aarch64: bf16


def _read_cpuinfo() -> str:
  """/proc/cpuinfo, or '' where there is none (macOS, Windows)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def cpu_flags(cpuinfo_text: Optional[str] = None) -> Set[str]:
  """The feature flags of the first CPU in /proc/cpuinfo ('flags' on x86, 'Features' on ARM);
  empty where the file does not exist."""
  if cpuinfo_text is None:
    cpuinfo_text = _read_cpuinfo()
  for line in cpuinfo_text.splitlines():
    key, _, value = line.partition(':')
    if key.strip().lower() in ('flags', 'features'):
      return set(value.split())
  return set()


def resolve_precision(requested: str, flags: Iterable[str],
                      gpu_capabilities: Sequence[Tuple[int, int]] = (),
                      ) -> Tuple[str, str, bool]:
  """(precision to train in, why, whether that choice will be slow here). 'auto' picks, for
  the devices that train: GPUs all of compute capability >= 8.0 (Ampere on): mixed_bfloat16;
  all >= 7.0: mixed_float16; older GPUs: float32. No GPU: mixed_bfloat16 where the CPU has
  native bf16, else float32.
  An explicit choice is kept as it is, flagged slow where half precision is emulated."""
  if requested not in PRECISIONS:
    raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {requested!r}')
  native = sorted(set(flags) & set(BF16_CPU_FLAGS))
  if gpu_capabilities:
    oldest = min(gpu_capabilities)
    where = f'{len(gpu_capabilities)} GPU(s), oldest compute capability {oldest[0]}.{oldest[1]}'
    if requested != 'auto':
      return requested, f'precision {requested} as configured ({where})', False
    if oldest >= (8, 0):
      return 'mixed_bfloat16', f'auto: {where} has bfloat16', False
    if oldest >= (7, 0):
      return 'mixed_float16', f'auto: {where} has float16 tensor cores, not bfloat16', False
    return 'float32', f'auto: {where} has no fast half precision', False
  if requested == 'auto':
    if native:
      return 'mixed_bfloat16', f'auto: the CPU has native bfloat16 ({", ".join(native)})', False
    return 'float32', ('auto: the CPU has no native bfloat16 (no avx512_bf16/amx_bf16), where '
                       'bf16 is emulated and slower than float32'), False
  if requested == 'mixed_bfloat16' and not native:
    return requested, ('precision mixed_bfloat16 as configured, but this CPU has no native '
                       'bfloat16 (avx512_bf16/amx_bf16): TensorFlow emulates it, measured 7-8x '
                       'slower than float32 on such a CPU; set precision=auto or float32'), True
  if requested == 'mixed_float16':
    return requested, ('precision mixed_float16 as configured; on a CPU it is emulated and '
                       'slow; it is meant for GPUs'), True
  return requested, f'precision {requested} as configured', False


def describe_cpu(cpuinfo_text: Optional[str] = None) -> str:
  """'AMD EPYC (native bf16: none)': the CPU model and its bf16 flags, for benchmark records
  (they decide the precision, and so how many steps fit in a time budget)."""
  if cpuinfo_text is None:
    cpuinfo_text = _read_cpuinfo()
  name = next((line.split(':', 1)[1].strip() for line in cpuinfo_text.splitlines()
               if line.startswith('model name')), platform.machine())
  native = sorted(cpu_flags(cpuinfo_text) & set(BF16_CPU_FLAGS))
  return f'{name} (native bf16: {", ".join(native) or "none"})'


def gpu_compute_capabilities() -> List[Tuple[int, int]]:
  """Compute capability of each visible GPU (TensorFlow's view); [] on a CPU-only machine."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  capabilities = []
  for gpu in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(tuple(details.get('compute_capability') or (0, 0)))
  return capabilities


def training_precision(requested: str, component: str = 'SimCLRTrainer') -> str:
  """resolve_precision() for this machine, logged (a warning where the choice will be slow)."""
  precision, reason, slow = resolve_precision(requested, cpu_flags(),
                                              gpu_compute_capabilities())
  (logging.warning if slow else logging.info)('%s: training in %s (%s; %s)', component,
                                                precision, reason, platform.machine())
  return precision
