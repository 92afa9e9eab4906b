"""precision='auto' and the time budget's step count: the pure decisions behind them."""
import pytest

from components.simclr_trainer import hardware, optim, time_budget

XEON = 'processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n'
EPYC = 'processor\t: 0\nflags\t\t: fpu sse avx2 fma\n'
GRAVITON = 'processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n'


def test_cpu_flags_read_x86_and_arm_spellings():
  assert 'amx_bf16' in hardware.cpu_flags(XEON)
  assert hardware.cpu_flags(EPYC) == {'fpu', 'sse', 'avx2', 'fma'}
  assert 'bf16' in hardware.cpu_flags(GRAVITON)
  assert hardware.cpu_flags('') == set()


@pytest.mark.parametrize('cpuinfo,expected', [
    (XEON, 'mixed_bfloat16'), (GRAVITON, 'mixed_bfloat16'), (EPYC, 'float32')])
def test_auto_on_a_cpu_uses_bf16_only_where_it_is_native(cpuinfo, expected):
  precision, reason, slow = hardware.resolve_precision('auto', hardware.cpu_flags(cpuinfo))
  assert precision == expected
  assert not slow
  assert reason.startswith('auto:')


@pytest.mark.parametrize('capabilities,expected', [
    ([(9, 0)], 'mixed_bfloat16'), ([(8, 0), (8, 6)], 'mixed_bfloat16'),
    ([(8, 0), (7, 0)], 'mixed_float16'), ([(6, 1)], 'float32')])
def test_auto_on_gpus_follows_the_oldest_gpu(capabilities, expected):
  precision, _, slow = hardware.resolve_precision('auto', set(), capabilities)
  assert precision == expected and not slow


def test_an_explicit_choice_is_kept_and_flagged_where_emulated():
  flags = hardware.cpu_flags(EPYC)
  precision, reason, slow = hardware.resolve_precision('mixed_bfloat16', flags)
  assert (precision, slow) == ('mixed_bfloat16', True)
  assert 'precision=auto or float32' in reason
  assert hardware.resolve_precision('mixed_bfloat16', hardware.cpu_flags(XEON))[2] is False
  assert hardware.resolve_precision('float32', flags) == ('float32', 'precision float32 as '
                                                           'configured', False)
  with pytest.raises(ValueError, match='precision must be one of'):
    hardware.resolve_precision('bf16', flags)


def test_time_budget_buys_steps_at_the_measured_pace_within_the_epochs():
  # 20 steps done, 100 s left at 0.5 s/step with 5% kept back: 190 more steps.
  assert time_budget.steps_within_budget(20, 1000, 100.0, 0.5) == 210
  assert time_budget.steps_within_budget(20, 100, 100.0, 0.5) == 100  # never beyond the epochs
  assert time_budget.steps_within_budget(20, 1000, -5.0, 0.5) == 21  # already late: one more step


def test_schedule_follows_variables_set_after_tracing():
  import tensorflow as tf
  warmup, total = tf.Variable(10.0), tf.Variable(100.0)
  schedule = optim.WarmupCosine(1.0, warmup, total)
  lr = tf.function(schedule)
  assert float(lr(55)) == pytest.approx(0.5, abs=1e-6)
  total.assign(50.0)
  warmup.assign(5.0)
  assert float(lr(50)) == pytest.approx(0.0, abs=1e-6)
  assert float(lr(5)) == pytest.approx(1.0, abs=1e-6)
  assert schedule.get_config() == {'peak': 1.0, 'warmup_steps': 5, 'total_steps': 50}


def test_describe_cpu_names_the_model_and_its_bf16_flags():
  assert hardware.describe_cpu('model name\t: AMD EPYC 9R14\n' + XEON) == (
      'AMD EPYC 9R14 (native bf16: amx_bf16, avx512_bf16)')
  assert hardware.describe_cpu('model name\t: AMD EPYC\n' + EPYC) == (
      'AMD EPYC (native bf16: none)')
