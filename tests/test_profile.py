"""benchmarks/kernel_profile.py: kernel kinds from HLO and traces (GPU-shaped and a real CPU run).

No timing is asserted: only which kind each kernel lands in, counts, and that the
kinds and host gaps add up to the total.
"""
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))
import kernel_profile  # pylint: disable=g-import-not-at-top,wrong-import-position

ROWS = kernel_profile.KINDS + (kernel_profile.HOST_GAP, 'total')

# The shapes of XLA:GPU's compiled HLO: cuDNN conv calls named by direction, kInput
# reduction fusions, loop fusions named after their root op, control flow.
GPU_HLO = '''HloModule jit_step, is_scheduled=true

%fused_reduce (p0: bf16[8,16]) -> f32[16] {
  %p0 = bf16[8,16]{1,0} parameter(0)
  %convert.1 = f32[8,16]{1,0} convert(%p0)
  %constant.2 = f32[] constant(0)
  ROOT %reduce.3 = f32[16]{0} reduce(%convert.1, %constant.2), dimensions={0}, to_apply=%add
}

%fused_gather (p0.1: bf16[5,8,16], p1: s32[5,1]) -> bf16[5,8,16] {
  %p0.1 = bf16[5,8,16]{2,1,0} parameter(0)
  %p1 = s32[5,1]{1,0} parameter(1)
  ROOT %gather.4 = bf16[5,8,16]{2,1,0} gather(%p0.1, %p1), offset_dims={1,2}, slice_sizes={1,8,16}
}

%fused_add (p0.2: bf16[8,16], p1.2: bf16[8,16]) -> bf16[8,16] {
  %p0.2 = bf16[8,16]{1,0} parameter(0)
  %p1.2 = bf16[8,16]{1,0} parameter(1)
  ROOT %add.5 = bf16[8,16]{1,0} add(%p0.2, %p1.2)
}

%fused_transpose (p0.3: bf16[8,16]) -> bf16[16,8] {
  %p0.3 = bf16[8,16]{1,0} parameter(0)
  ROOT %transpose.6 = bf16[16,8]{1,0} transpose(%p0.3), dimensions={1,0}
}

%fused_pool (p0.4: bf16[8,16]) -> bf16[8,16] {
  %p0.4 = bf16[8,16]{1,0} parameter(0)
  %constant.7 = bf16[] constant(0)
  ROOT %reduce-window.8 = bf16[8,16]{1,0} reduce-window(%p0.4, %constant.7), window={size=3x3}, to_apply=%add
}

ENTRY %main.9 (x: bf16[8,32,32,16], w: bf16[3,3,16,16]) -> bf16[16,8] {
  %x = bf16[8,32,32,16]{3,2,1,0} parameter(0)
  %w = bf16[3,3,16,16]{3,2,1,0} parameter(1)
  %cudnn-conv.1 = (bf16[8,32,32,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %cudnn-conv-bw-input.2 = (bf16[8,32,32,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %cudnn-conv-bw-filter.3 = (bf16[16,3,3,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %x), window={size=32x32 pad=1_1x1_1}, dim_labels=f01b_i01o->01bf, custom_call_target="__cudnn$convBackwardFilter"
  %input_reduce_fusion = f32[16]{0} fusion(%x), kind=kInput, calls=%fused_reduce
  %loop_gather_fusion.2 = bf16[5,8,16]{2,1,0} fusion(%x, %w), kind=kLoop, calls=%fused_gather
  %loop_add_fusion = bf16[8,16]{1,0} fusion(%x, %x), kind=kLoop, calls=%fused_add
  %loop_reduce_window_fusion = bf16[8,16]{1,0} fusion(%x), kind=kLoop, calls=%fused_pool
  %while.1 = (s32[], bf16[8,16]{1,0}) while(%x), condition=%cond, body=%body
  ROOT %loop_transpose_fusion = bf16[16,8]{1,0} fusion(%x), kind=kLoop, calls=%fused_transpose
}
'''


def _event(name, ts, dur, tid=7, **args):
  return dict(ph='X', pid=1, tid=tid, ts=ts, dur=dur, name=name, args=args)


def _gpu_trace():
  """A GPU trace as the profiler writes it: one stream line, a derived line that repeats
  the kernels (ignored), and host events (ignored)."""
  meta = [dict(ph='M', pid=1, name='process_name', args=dict(name='/device:GPU:0')),
          dict(ph='M', pid=1, tid=7, name='thread_name', args=dict(name='Stream #7(Compute)')),
          dict(ph='M', pid=1, tid=100, name='thread_name', args=dict(name='XLA Ops')),
          dict(ph='M', pid=2, name='process_name', args=dict(name='/host:CPU')),
          dict(ph='M', pid=2, tid=1, name='thread_name', args=dict(name='python'))]
  tagged = dict(hlo_module='jit_step')
  kernels = [
      _event('sm90_xmma_fprop_implicit_gemm', 0, 10, hlo_op='cudnn-conv.1', **tagged),
      _event('sm90_xmma_dgrad_implicit_gemm', 10, 20, hlo_op='cudnn-conv-bw-input.2', **tagged),
      _event('sm90_xmma_wgrad_implicit_gemm', 30, 30, hlo_op='cudnn-conv-bw-filter.3', **tagged),
      _event('input_reduce_fusion', 65, 5, hlo_op='input_reduce_fusion', **tagged),
      _event('loop_gather_fusion_2', 70, 4),  # no hlo_op: found by its kernel-name spelling
      _event('loop_add_fusion', 74, 1, hlo_op='loop_add_fusion', **tagged),
      _event('loop_reduce_window_fusion', 75, 1, hlo_op='loop_reduce_window_fusion', **tagged),
      _event('loop_transpose_fusion', 76, 1, hlo_op='loop_transpose_fusion', **tagged),
      _event('void cudnn::cnn::wgrad_alg0_engine<float>', 80, 3),  # cuDNN's own: by name
      _event('MemcpyD2D', 90, 1),
      _event('loop_add_fusion', 91, 2, hlo_op='add.3', hlo_module='jit_add'),  # another module
  ]
  noise = [_event('cudnn-conv.1', 0, 10, tid=100, hlo_op='cudnn-conv.1'),
           dict(ph='X', pid=2, tid=1, ts=0, dur=200, name='PjitFunction(step)', args={})]
  return dict(traceEvents=meta + kernels + noise)


def test_gpu_shaped_trace_is_sorted_into_kinds_and_adds_up():
  table = kernel_profile.parse_hlo(GPU_HLO)
  assert kernel_profile.module_name(GPU_HLO) == 'jit_step'
  kernels = kernel_profile.device_kernels(_gpu_trace())
  assert len(kernels) == 11  # the derived 'XLA Ops' line and the host are left out
  rows = {r['kind']: r for r in kernel_profile.summarise(kernels, table, 'jit_step', units=2)}
  assert tuple(rows) == ROWS
  counts = {kind: rows[kind]['count'] for kind in ROWS}
  assert counts == dict(conv_forward=1, conv_input_grad=1, conv_weight_grad=2, reduction=1,
                        pooling=1, elementwise=2, gather_permute=1, copy_transpose=2, other=0,
                        host_gap=3, total=11)
  # Gaps: 60-65, 77-80, 83-90 (us). Kinds plus gaps make the total, per unit too.
  assert rows['host_gap']['time_ms'] == pytest.approx(0.015)
  assert rows['total']['time_ms'] == pytest.approx(0.078 + 0.015)  # kernels + gaps
  assert sum(rows[k]['time_ms'] for k in ROWS[:-1]) == pytest.approx(rows['total']['time_ms'])
  assert rows['conv_weight_grad']['ms_per_unit'] == pytest.approx(0.033 / 2)


def test_cpu_convolutions_are_told_apart_by_window_and_transpose():
  """XLA:CPU keeps plain convolutions: the weight gradient slides a window larger than
  its output; the input gradient comes from jax's transpose; the rest is forward."""
  hlo = '''HloModule jit_g
ENTRY %main (x: f32[8,16,16,4], w: f32[3,3,4,8]) -> f32[4,3,3,8] {
  %conv_general_dilated.3 = f32[8,16,16,8]{3,2,1,0} convolution(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(f)/jvp()/conv_general_dilated"}
  %convolution = f32[8,16,16,4]{3,2,1,0} convolution(%a, %b), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(f)/transpose(jvp())/conv_general_dilated"}
  ROOT %convolution.1 = f32[4,3,3,8]{3,2,1,0} convolution(%c, %d), window={size=16x16 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}
'''
  table = kernel_profile.parse_hlo(hlo)
  kinds = {name: kernel_profile.classify_instruction(ins) for name, ins in table.items()}
  assert kinds == {'conv_general_dilated.3': 'conv_forward', 'convolution': 'conv_input_grad',
                   'convolution.1': 'conv_weight_grad'}


def test_profile_of_a_tiny_cpu_run_has_every_kind_and_adds_up(tmp_path):
  """The script end to end on XLA:CPU: train steps (2 seeds) and a scoring pass."""
  command = [sys.executable, str(REPO / 'benchmarks/kernel_profile.py'), '--size=micro',
             '--seeds=2', '--train_images=200', '--val_images=40', '--batch_size=8',
             '--groups_per_call=1', '--eval_batch_size=20', '--steps_per_dispatch=1',
             '--precision=fp32', '--train_calls=1', '--score_chunks=1',
             f'--markdown={tmp_path / "profile.md"}']
  env = dict(os.environ, XLA_FLAGS=' '.join(filter(None, (
      os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0',
      '--xla_llvm_disable_expensive_passes=true'))))
  try:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
  except subprocess.TimeoutExpired:
    pytest.skip('the profile run did not finish in 900 s (a busy machine); nothing was checked')
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  compile_row, rows = records[0], records[1:]
  assert compile_row['kind'] == 'compile' and {'trace_s', 'lower_s', 'compile_s'} <= set(
      compile_row)
  for program in ('train', 'score'):
    mine = {r['kind']: r for r in rows if r['program'] == program}
    assert tuple(mine) == ROWS, program
    kinds_ms = sum(mine[k]['time_ms'] for k in ROWS[:-1])
    assert kinds_ms == pytest.approx(mine['total']['time_ms'], rel=1e-3, abs=1e-3), program
    assert sum(mine[k]['count'] for k in kernel_profile.KINDS) == mine['total']['count']
    assert mine['conv_forward']['count'] > 0 and mine['elementwise']['count'] > 0
  train = {r['kind']: r for r in rows if r['program'] == 'train'}
  # One weight gradient per forward conv; the stem's input needs no gradient.
  assert train['conv_weight_grad']['count'] == train['conv_forward']['count']
  # One step traced; the vmapped seeds share each (grouped) convolution.
  assert train['conv_input_grad']['count'] == train['conv_forward']['count'] - 1
  assert train['reduction']['count'] > 0 and train['gather_permute']['count'] > 0
  score = {r['kind']: r for r in rows if r['program'] == 'score'}
  assert score['conv_input_grad']['count'] == score['conv_weight_grad']['count'] == 0
  table = (tmp_path / 'profile.md').read_text()
  assert table.count('| total |') == 2 and '| conv_weight_grad |' in table
