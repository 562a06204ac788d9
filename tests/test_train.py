"""Tests of spos_jax.train: the fair-group step vs its reference, optimizer, the run loop."""
import functools
import glob
import logging
import os
import re
import struct

from flax.traverse_util import flatten_dict, unflatten_dict
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboardX.proto import event_pb2

from spos_jax import augment
from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import data as data_lib
from spos_jax import memory
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import fast_jit, snapshot

# ------------------------------------------------------------------------- helpers


def _first_seed(states):
  return jax.tree.map(lambda a: a[0], states)


def _leaves(tree):
  return {'/'.join(str(getattr(p, 'key', getattr(p, 'idx', p))) for p in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_close(a, b, rtol, atol, what=''):
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys()
  for k in la:
    np.testing.assert_allclose(la[k], lb[k], rtol=rtol, atol=atol, err_msg=f'{what} {k}')


# How close is close for two fp32 computations of the same values that differ only
# in summation order (the fair group vs the reference micro-steps, vmap vs lax.map,
# or another CPU's vector width). Each compared value is its start (initial weight,
# running statistic; 0 for the momentum and the loss) plus a change accumulated
# from sums: a conv-kernel gradient entry sums over every pixel of the micro-batch
# (B*32*32 at the stem) and over the K micro-batches of the group, for each step.
# Reordering a sum of N terms of scale s moves it by about eps*sqrt(N)*s (rounding
# errors add as a random walk), and storing the value rounds it by eps*|value|:
#   tol(leaf) = FP32_SAFETY * eps32 * (max|value| + sqrt(N) * s)
# with N the largest such count and s the scale of the summed terms: the change
# max|value - start| (the terms of a gradient sum are of the size of the sum), but
# for a BN running mean the activations' spread sqrt(max running var): their mean
# can be near 0 while each term is not. FP32_SAFETY covers the tails over
# thousands of entries and error carried through the layers; on this project's
# 2-core CPU the largest difference of every equivalence test is under a tenth of
# its tolerance, and a wrong computation (a micro-batch repeated instead of
# another, the mean instead of the sum, seeds swapped) is off by orders of
# magnitude in most leaves (_assert_not_fp32_close).
FP32_SAFETY = 10.0


def _summed_terms(config, steps: int) -> int:
  """Most terms summed into one compared value: pixels of a group's micro-batches."""
  return steps * config_lib.group_size(config) * config.train.batch_size * 32 * 32


def _fp32_mismatches(a, b, terms: int, start=None) -> dict[str, float]:
  """{leaf: max|a - b| / tolerance} of the leaves of `a` farther from `b` than fp32
  summation order explains (see FP32_SAFETY); `start`: the values before the steps."""
  la, lb = _leaves(a), _leaves(b)
  ls = _leaves(start) if start is not None else {k: np.zeros_like(v) for k, v in lb.items()}
  assert la.keys() == lb.keys() == ls.keys()
  eps = float(np.finfo(np.float32).eps)
  out = {}
  for k in la:
    ref = lb[k].astype(np.float64)
    term_scale = np.abs(ref - ls[k]).max()
    running_var = lb.get(k[:-len('mean')] + 'var') if k.endswith('/mean') else None
    if running_var is not None:
      term_scale = max(term_scale, float(np.sqrt(np.abs(running_var).max())))
    tol = FP32_SAFETY * eps * (np.abs(ref).max() + np.sqrt(terms) * term_scale)
    error = float(np.abs(la[k].astype(np.float64) - ref).max())
    if not error <= tol:  # NaN counts as a mismatch
      out[k] = error / tol if tol else float('inf')
  return out


def _assert_fp32_close(a, b, terms: int, start=None, what=''):
  mismatches = _fp32_mismatches(a, b, terms, start)
  assert not mismatches, f'{what}: error / tolerance of the leaves off: {mismatches}'


def _assert_not_fp32_close(a, b, terms: int, start=None, what=''):
  """The comparison must catch a wrong computation: most leaves off, not one."""
  mismatches = _fp32_mismatches(a, b, terms, start)
  assert len(mismatches) > len(_leaves(b)) // 2, f'{what}: only {sorted(mismatches)} caught'


def _max_change(a, b):
  return max(float(np.abs(x - y).max()) for x, y in zip(_leaves(a).values(), _leaves(b).values()))


def _trace(opt_state):
  """The SGD momentum buffer inside a (possibly MultiSteps-wrapped) optimizer state."""
  return optax.tree_utils.tree_get(opt_state, 'trace')


def _by_name(tree, model, collection):
  """`model`'s `collection` with the entries of `tree` of the same name (a masked net's
  subset); names `tree` lacks (Linear Transformer kernels) keep model's own init."""
  own = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros(6, jnp.int32),
                   train=True)
  flat = flatten_dict(tree)
  return unflatten_dict({k: flat.get(k, v) for k, v in flatten_dict(own[collection]).items()})


def _tb_scalars(workdir, tag):
  """{step: value} of one scalar tag, read from the TFRecord event files under tb/."""
  out = {}
  for path in glob.glob(os.path.join(workdir, 'tb', 'events*')):
    with open(path, 'rb') as f:
      raw = f.read()
    i = 0
    while i < len(raw):
      (n,) = struct.unpack('<Q', raw[i:i + 8])
      event = event_pb2.Event.FromString(raw[i + 12:i + 12 + n])
      i += 12 + n + 4
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = value.simple_value
  return out


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope='module')
def base(tiny_config, tiny_data):
  """Config, model, optimizer and `init_states` state (seed 0) of the tiny full space."""
  config = tiny_config()
  model = train.create_model(config)
  tx = train.create_optimizer(config, tiny_data.num_train)
  state = _first_seed(train.init_states(model, tx, (0,)))
  return config, model, tx, state


def _setup(base, tiny_config, tiny_data, fields):
  """A case's config/model/tx and its initial state: the base params taken by name."""
  config = tiny_config(**fields)
  model = train.create_model(config)
  tx = train.create_optimizer(config, tiny_data.num_train)
  state0 = base[3]
  params = _by_name(state0.params, model, 'params')
  state = state0.replace(params=params,
                         batch_stats=_by_name(state0.batch_stats, model, 'batch_stats'),
                         opt_state=tx.init(params))
  return config, model, tx, state


EQUIVALENCE_CASES = {
    'shared': {},
    'unshared': {'sampling.topology': 'unshared'},
    'masked': {'space.masked_ops': 'none,avg_pool_3x3'},  # |O| = 3
    'linear_transformers': {'model.lt_skip': True, 'model.lt_pool': True},
}


@pytest.mark.parametrize('case', list(EQUIVALENCE_CASES))
def test_fair_group_step_equals_multisteps_reference(base, tiny_config, tiny_data, case):
  """Two fair-group steps == 2|O| reference micro-steps under MultiSteps(sum): params,
  batch stats and the momentum trace, in fp32, with weight decay on."""
  config, model, tx, state = _setup(base, tiny_config, tiny_data, EQUIVALENCE_CASES[case])
  assert config.train.weight_decay > 0 and config.train.momentum > 0
  k = config_lib.group_size(config)
  assert k == (3 if 'masked' in case else 5)
  paths = train.group_inputs(config, tiny_data, state.seed, state.step)[2]
  assert paths.shape == ((k, 3, 6) if 'unshared' in case else (k, 6))
  fast = fast_jit(functools.partial(train.fair_group_step, config, model, tx))
  tx_multi = optax.MultiSteps(tx, k, use_grad_mean=False)
  micro = fast_jit(functools.partial(train.reference_micro_step, config, model, tx_multi))

  fair = state
  ref = wrong = state.replace(opt_state=tx_multi.init(state.params))
  for step in range(2):
    fair, metrics = fast(fair, tiny_data)
    before = ref.params
    for member in range(k):
      ref, _ = micro(ref, tiny_data, member)
      # The deliberately wrong reference: member 0's micro-batch twice, member k-1's never.
      wrong, _ = micro(wrong, tiny_data, 0 if member == k - 1 else member)
      if member < k - 1:  # MultiSteps only accumulates until the group is complete
        assert _max_change(ref.params, before) == 0
    assert int(fair.step) == step + 1 and int(ref.step) == (step + 1) * k
    assert bool(metrics['finite'])
  assert _max_change(fair.params, state.params) > 1e-4  # the steps did move the weights
  terms = _summed_terms(config, steps=2)
  for name, (got, expected, wrong_one, start) in {
      'params': (fair.params, ref.params, wrong.params, state.params),
      'batch_stats': (fair.batch_stats, ref.batch_stats, wrong.batch_stats, state.batch_stats),
      'momentum': (_trace(fair.opt_state), _trace(ref.opt_state.inner_opt_state),
                   _trace(wrong.opt_state.inner_opt_state), None),
  }.items():
    _assert_fp32_close(got, expected, terms, start, what=name)
    _assert_not_fp32_close(got, wrong_one, terms, start, what=f'{name} (micro-batch repeated)')
  assert int(ref.opt_state.gradient_step) == 2 and int(ref.opt_state.mini_step) == 0


@pytest.fixture(scope='module')
def two_seeds(tiny_config, tiny_data):
  """Config, model and optimizer of a tiny two-seed run, and its compiled train step
  with the seeds vmapped and with the seeds one after another."""
  config = tiny_config(seeds=(0, 1))
  model = train.create_model(config)
  tx = train.create_optimizer(config, tiny_data.num_train)
  states = train.init_states(model, tx, config.seeds)
  chunks = {parallel: train.make_train_chunk(config, model, tx, 100, 1, None, parallel)
            .lower(states, tiny_data).compile() for parallel in (True, False)}
  return config, model, tx, chunks


def test_scanned_chunk_equals_a_single_step_and_skips_past_the_end(two_seeds, tiny_data):
  """steps_per_dispatch > 1 (GPU configs): a chunk of 2 scanned steps in a run of 1
  step computes that step as a single-step dispatch does, then skips the second,
  marks it invalid and leaves the states alone. (One step: later steps drift apart by
  rounding, see below.)"""
  config, model, tx, chunks = two_seeds
  states, metrics = train.make_train_chunk(config, model, tx, 1, 2)(
      train.init_states(model, tx, config.seeds), tiny_data)
  np.testing.assert_array_equal(np.asarray(metrics['valid']), [[True, True], [False, False]])
  np.testing.assert_array_equal(np.asarray(states.step), [1, 1])
  single, single_metrics = chunks[True](train.init_states(model, tx, config.seeds), tiny_data)
  np.testing.assert_allclose(np.asarray(metrics['loss'])[0],
                             np.asarray(single_metrics['loss'])[0], rtol=1e-5)
  start = train.init_states(model, tx, config.seeds)
  terms = _summed_terms(config, steps=1)
  _assert_fp32_close(states.params, single.params, terms, start.params, what='params')
  _assert_fp32_close(states.batch_stats, single.batch_stats, terms, start.batch_stats,
                     what='batch_stats')
  _assert_fp32_close(_trace(states.opt_state), _trace(single.opt_state), terms,
                     what='momentum')


@pytest.mark.parametrize('seed_loop', ['lax.map', 'unrolled'])
def test_seeds_one_after_another_equal_seeds_in_parallel(two_seeds, tiny_data, seed_loop):
  """lax.map over the seeds (the low-memory step) and the unrolled seeds (the CPU step,
  train.seed_loop='unrolled') == vmap over them: params, BN statistics, momentum and
  metrics after a step (fp32). Later steps drift apart by rounding: XLA:CPU convolves
  differently inside a loop, and the tiny net amplifies it."""
  config, model, tx, chunks = two_seeds
  if seed_loop == 'unrolled':
    config = config.copy_and_resolve_references()
    config.train.seed_loop = 'unrolled'
    one_after_another = train.make_train_chunk(config, model, tx, 100, 1)
  else:
    one_after_another = chunks[False]
  par, par_metrics = chunks[True](train.init_states(model, tx, config.seeds), tiny_data)
  seq, seq_metrics = one_after_another(train.init_states(model, tx, config.seeds), tiny_data)
  start = train.init_states(model, tx, config.seeds)
  terms = _summed_terms(config, steps=1)
  swapped = lambda tree: jax.tree.map(lambda a: a[::-1], tree)  # a step that mixed up seeds
  for name, (got, expected, begin) in {
      'params': (seq.params, par.params, start.params),
      'batch_stats': (seq.batch_stats, par.batch_stats, start.batch_stats),
      'momentum': (_trace(seq.opt_state), _trace(par.opt_state), None),
  }.items():
    _assert_fp32_close(got, expected, terms, begin, what=name)
    _assert_not_fp32_close(got, swapped(expected), terms,
                           None if begin is None else swapped(begin), what=f'{name} (swapped)')
  _assert_fp32_close(seq_metrics['loss'], par_metrics['loss'], terms, what='loss')


def test_uniform_step_running_every_op_equals_running_the_drawn_one(tiny_config, tiny_data):
  """train.uniform_ops='all' (every allowed op runs, the drawn one's output and BN
  statistics are kept: the CPU's uniform step) == 'drawn' (a conditional runs the
  drawn op alone): params, BN statistics, momentum and loss after one step of two
  unrolled seeds, each on its own path (fp32). Seeds swapped must fail."""
  stepped = {}
  for ops in config_lib.UNIFORM_OPS:
    config = tiny_config(**{'seeds': (0, 1), 'sampling.method': 'uniform',
                            'train.seed_loop': 'unrolled', 'train.uniform_ops': ops})
    model = train.create_model(config)
    tx = train.create_optimizer(config, tiny_data.num_train)
    stepped[ops] = train.make_train_chunk(config, model, tx, 100, 1)(
        train.init_states(model, tx, config.seeds), tiny_data)  # donated
  start = train.init_states(model, tx, config.seeds)
  (got, got_metrics), (expected, expected_metrics) = stepped['all'], stepped['drawn']
  paths = [train.group_inputs(config, tiny_data, s, 0)[2] for s in config.seeds]
  assert not np.array_equal(paths[0], paths[1])  # the seeds drew different paths
  terms = _summed_terms(config, steps=1)
  swapped = lambda tree: jax.tree.map(lambda a: a[::-1], tree)
  for name, (a, b, begin) in {
      'params': (got.params, expected.params, start.params),
      'batch_stats': (got.batch_stats, expected.batch_stats, start.batch_stats),
      'momentum': (_trace(got.opt_state), _trace(expected.opt_state), None),
  }.items():
    _assert_fp32_close(a, b, terms, begin, what=name)
    if name != 'batch_stats':
      _assert_not_fp32_close(a, swapped(b), terms, None if begin is None else swapped(begin),
                             what=f'{name} (swapped)')
  # The statistics of ops neither seed drew stay as initialised, the same in both seeds;
  # swapping must catch every one that a step moved.
  moved = {k for k, v in _leaves(expected.batch_stats).items()
           if not np.array_equal(v, _leaves(start.batch_stats)[k])}
  caught = _fp32_mismatches(got.batch_stats, swapped(expected.batch_stats), terms,
                            swapped(start.batch_stats))
  assert moved and moved <= set(caught), sorted(moved - set(caught))
  _assert_fp32_close(got_metrics['loss'], expected_metrics['loss'], terms, what='loss')


def test_seeds_train_one_after_another_when_all_at_once_would_not_fit(
    two_seeds, tiny_data, monkeypatch, caplog):
  """A device limit between the two estimates: train picks the sequential step and
  says so; a limit below both: DeviceMemoryError naming the estimate and the limit."""
  config, model, tx, chunks = two_seeds
  need = {p: memory.estimate_bytes(c) for p, c in chunks.items()}
  if need[True] is None:
    pytest.skip('this backend reports no memory analysis')
  assert need[False] < need[True]
  states = train.init_states(model, tx, config.seeds)
  monkeypatch.setattr(memory, 'device_limit_bytes', lambda: (need[False] + need[True]) // 2)
  with caplog.at_level(logging.WARNING):
    chosen, parallel = train.compile_train_chunk(config, model, tx, 100, states, tiny_data)
  assert not parallel and memory.estimate_bytes(chosen) == need[False]
  assert 'the seeds train one after another' in caplog.text
  monkeypatch.setattr(memory, 'device_limit_bytes', lambda: need[False] // 2)
  with pytest.raises(memory.DeviceMemoryError,
                     match=r'training 2 seeds .* one seed at a time, needs an estimated'):
    train.compile_train_chunk(config, model, tx, 100, states, tiny_data)


def test_on_the_cpu_the_host_memory_is_the_limit(two_seeds, tiny_data, monkeypatch, caplog):
  """The CPU backend reports no limit: the host's available memory is checked instead,
  with the same fallback (seeds one after another) and a one-line refusal that names
  the host and the CPU-sized config."""
  config, model, tx, chunks = two_seeds
  need = {p: memory.estimate_bytes(c) for p, c in chunks.items()}
  if need[True] is None or not memory.on_host():
    pytest.skip('needs the CPU backend and its memory analysis')
  states = train.init_states(model, tx, config.seeds)
  monkeypatch.setattr(memory, 'host_available_bytes', lambda: (need[False] + need[True]) // 2)
  with caplog.at_level(logging.WARNING):
    chosen, parallel = train.compile_train_chunk(config, model, tx, 100, states, tiny_data)
  assert not parallel and 'the host (available memory) allows' in caplog.text
  monkeypatch.setattr(memory, 'host_available_bytes', lambda: need[False] // 2)
  with pytest.raises(memory.DeviceMemoryError,
                     match=r'one seed at a time, needs an estimated .* GiB of memory, but the '
                           r'host \(available memory\) allows .*configs/tiny\.py'):
    train.compile_train_chunk(config, model, tx, 100, states, tiny_data)


def test_a_long_cpu_run_says_so_once(monkeypatch, caplog):
  monkeypatch.setattr(memory, 'on_host', lambda device=None: True)
  with caplog.at_level(logging.WARNING):
    train.warn_if_long_on_host(4 * 86400.0)
    train.warn_if_long_on_host(600.0)
  assert caplog.text.count('configs/tiny.py') == 1 and 'about 4d 0h more' in caplog.text


def test_format_eta_reads_as_days_past_two_days():
  assert train.format_eta(245) == '4m05s'
  assert train.format_eta(3 * 3600 + 7 * 60) == '3h07m'
  assert train.format_eta(12 * 86400 + 4 * 3600 + 59) == '12d 4h'


def test_fair_group_step_equals_hand_summed_gradients(base, tiny_data):
  """One fair step == grads of each micro-batch (its own path) summed by hand, one SGD step."""
  config, model, tx, state = base
  images, labels, paths, keys = train.group_inputs(config, tiny_data, state.seed, state.step)
  k = config_lib.group_size(config)

  @fast_jit
  def member_grad(params, stats, images, labels, path, key):
    x = augment.augment_batch(key, images, config.train.augment)

    def loss_fn(p):
      logits, new = model.apply({'params': p, 'batch_stats': stats}, x, path, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new
    return jax.grad(loss_fn, has_aux=True)(params)

  total, stats = None, state.batch_stats
  for m in range(k):
    grads, new = member_grad(state.params, stats, images[m], labels[m], paths[m], keys[m])
    stats = new['batch_stats']
    total = grads if total is None else jax.tree.map(jnp.add, total, grads)
  updates, _ = tx.update(total, state.opt_state, state.params)
  by_hand = optax.apply_updates(state.params, updates)

  fast, _ = fast_jit(functools.partial(train.fair_group_step, config, model, tx))(state, tiny_data)
  terms = _summed_terms(config, steps=1)
  _assert_fp32_close(fast.params, by_hand, terms, state.params, what='params')
  _assert_fp32_close(fast.batch_stats, stats, terms, state.batch_stats, what='batch_stats')
  # Summed, not averaged: the mean would move the weights 1/K as far, and the
  # comparison must tell them apart.
  assert _max_change(by_hand, state.params) > 1e-4
  updates, _ = tx.update(jax.tree.map(lambda g: g / k, total), state.opt_state, state.params)
  by_hand_mean = optax.apply_updates(state.params, updates)
  _assert_not_fp32_close(fast.params, by_hand_mean, terms, state.params, what='params (mean)')


# ------------------------------------------- shared layers: sum, mean, every micro-step


def _momentum(opt_state):
  """{layer: {...: momentum}} from every SGD trace of an optimizer state, however it
  is wrapped or partitioned (MultiSteps, multi_transform, {'shared', 'cells'})."""
  flat = {}
  for _, trace in optax.tree_utils.tree_get_all_with_path(opt_state, 'trace'):
    flat.update({k: v for k, v in flatten_dict(trace).items()
                 if not isinstance(v, optax.MaskedNode)})
  return unflatten_dict(flat)


def _shared_labels(params):
  return {name: 'shared' if name in train.SHARED_LAYERS else 'cells' for name in params}


def _reference_optimizer(mode, tx, k):
  """The straightforward optimizer of a train.shared_layers mode for k reference
  micro-steps (train.reference_micro_step); optax.MultiSteps sums a group."""
  if mode == 'mean':  # scale the shared layers' gradients by 1/k, then the run's SGD
    shared_mask = lambda params: {name: name in train.SHARED_LAYERS for name in params}
    return optax.MultiSteps(optax.chain(optax.masked(optax.scale(1 / k), shared_mask), tx), k,
                            use_grad_mean=False)
  # every_micro_step: the shared layers' SGD on every micro-batch, the cell ops' summed
  return optax.multi_transform(
      {'shared': tx.shared, 'cells': optax.MultiSteps(tx.cells, k, use_grad_mean=False)},
      _shared_labels)


# Each mode's deliberately wrong references: (what, which part it must get wrong, optimizer).
WRONG_SHARED_LAYERS = {
    'mean': [
        ('the sum, not the mean', 0, lambda tx, k: optax.MultiSteps(tx, k, use_grad_mean=False)),
        ('the mean on the cell ops too', 1,
         lambda tx, k: optax.MultiSteps(tx, k, use_grad_mean=True)),
    ],
    'every_micro_step': [
        ('the shared layers once per group', 0, lambda tx, k: optax.MultiSteps(
            optax.multi_transform({'shared': tx.cells, 'cells': tx.cells}, _shared_labels), k,
            use_grad_mean=False)),
        ('the cell ops every micro-batch', 1, lambda tx, k: optax.multi_transform(
            {'shared': tx.shared, 'cells': tx.shared}, _shared_labels)),
    ],
}


def test_shared_layers_are_every_top_level_layer_but_the_cells(base):
  """SHARED_LAYERS names the stem, reductions, final BN and classifier; everything else
  is a cell; a layer that is neither is an error that says where to add it."""
  shared, cells = train.split_shared(base[3].params)
  assert set(shared) == set(train.SHARED_LAYERS)
  assert cells and all(name.startswith('cell_') for name in cells)
  assert train.merge_shared(shared, cells) == dict(base[3].params)
  assert set(train.split_shared({'cells_0': 1, 'stem': 2})[1]) == {'cells_0'}  # scan_cells
  with pytest.raises(ValueError, match='add them to one of the two'):
    train.split_shared({'stem': 1, 'aux_head': 2})


# One case each, the masked subset (|O| = 3): every case compiles four steps, and
# test_fair_group_step_equals_multisteps_reference covers the full space.
@pytest.mark.parametrize('mode,case', [('mean', 'masked'), ('every_micro_step', 'masked')])
def test_shared_layer_modes_equal_their_references(base, tiny_config, tiny_data, mode, case):
  """Two optimizer steps of train.shared_layers='mean' / 'every_micro_step' == 2|O|
  single-path reference micro-steps (params, BN statistics, momentum; fp32, weight
  decay on): 'mean' = MultiSteps over a masked 1/|O| scale then SGD; 'every_micro_step'
  = multi_transform of the shared layers' SGD every micro-step and the cell ops'
  MultiSteps, its micro-steps unrolled (the CPU's step) and scanned (other devices').
  Each wrong reference is caught on the part it gets wrong."""
  config, model, tx, state = _setup(base, tiny_config, tiny_data,
                                    dict(EQUIVALENCE_CASES[case], **{'train.shared_layers': mode}))
  k = config_lib.group_size(config)
  references = {'right': _reference_optimizer(mode, tx, k)}
  references.update({what: make(tx, k) for what, _, make in WRONG_SHARED_LAYERS[mode]})
  micro = {name: fast_jit(functools.partial(train.reference_micro_step, config, model, ref_tx))
           for name, ref_tx in references.items()}
  ref = {name: state.replace(opt_state=ref_tx.init(state.params))
         for name, ref_tx in references.items()}
  for _ in range(2 * k):
    ref = {name: micro[name](r, tiny_data, int(r.step) % k)[0] for name, r in ref.items()}
  assert int(ref['right'].step) == 2 * k
  fast_ends = {}
  for unroll in ((True, False) if mode == 'every_micro_step' else (None,)):
    with pytest.MonkeyPatch.context() as patch:  # read when the step is traced
      if unroll is not None:
        patch.setattr(train, 'unroll_micro_steps', lambda unroll=unroll: unroll)
      fast = fast_jit(functools.partial(train.fair_group_step, config, model, tx))
      fair = state
      for _ in range(2):
        fair, metrics = fast(fair, tiny_data)
        assert bool(metrics['finite']) and float(metrics['update_norm_shared']) > 0
    assert int(fair.step) == 2
    fast_ends[unroll] = fair
  terms = _summed_terms(config, steps=2)
  for unroll, fair in fast_ends.items():
    how = {True: ' (unrolled)', False: ' (scanned)', None: ''}[unroll]
    compared = {
        'params': (fair.params, {n: r.params for n, r in ref.items()}, state.params),
        'momentum': (_momentum(fair.opt_state),
                     {n: _momentum(r.opt_state) for n, r in ref.items()}, None),
    }
    for name, (got, expected, start) in compared.items():
      _assert_fp32_close(got, expected['right'], terms, start, what=name + how)
      for what, part, _ in WRONG_SHARED_LAYERS[mode]:
        begin = None if start is None else train.split_shared(start)[part]
        _assert_not_fp32_close(train.split_shared(got)[part],
                               train.split_shared(expected[what])[part], terms, begin,
                               what=f'{name}{how} ({what})')
    _assert_fp32_close(fair.batch_stats, ref['right'].batch_stats, terms, state.batch_stats,
                       what='batch_stats' + how)


def test_every_micro_step_shared_layers_keep_the_steps_learning_rate(tiny_config, tiny_data):
  """The shared layers' optimizer counts micro-steps, but its lr is that of the optimizer
  step they belong to (micro-step i: schedule(i // |O|)), not a schedule |O| times faster."""
  config = tiny_config(**{'train.shared_layers': 'every_micro_step', 'train.momentum': 0.0,
                          'train.weight_decay': 0.0, 'space.masked_ops': 'none'})
  k, num_train = config_lib.group_size(config), tiny_data.num_train
  tx = train.create_optimizer(config, num_train)
  schedule = train.learning_rate_schedule(config, num_train)
  params = {'stem': {'kernel': jnp.zeros(())}}
  state, lrs = tx.shared.init(params), []
  for _ in range(3 * k):
    updates, state = tx.shared.update({'stem': {'kernel': jnp.ones(())}}, state, params)
    lrs.append(-float(updates['stem']['kernel']))
  expected = [float(schedule(i // k)) for i in range(3 * k)]
  np.testing.assert_allclose(lrs, expected, rtol=1e-6)
  assert not np.allclose(lrs, [float(schedule(i)) for i in range(3 * k)], rtol=1e-3)


def test_member_gradients_are_each_micro_batch_alone(base, tiny_data):
  """The probe's member gradients == each micro-batch's single-path gradient of the
  shared layers, by hand; the same rows in another member order fail."""
  config, model, _, state = base
  images, labels, paths, keys = train.group_inputs(config, tiny_data, state.seed, state.step)
  k = config_lib.group_size(config)

  @fast_jit
  def member_grad(images, labels, path, key):
    x = train.augment_micro_batch(config, key, images)
    cells = train.split_shared(state.params)[1]

    def loss_fn(shared):
      logits, _ = model.apply({'params': train.merge_shared(shared, cells),
                               'batch_stats': state.batch_stats}, x, path, train=True,
                              mutable=['batch_stats'])
      return train.cross_entropy(logits, labels).mean()
    return jax.grad(loss_fn)(train.split_shared(state.params)[0])

  rows = [member_grad(images[m], labels[m], paths[m], keys[m]) for m in range(k)]
  by_hand = jax.tree.map(lambda *g: jnp.stack(g), *rows)
  got = fast_jit(functools.partial(train.member_gradients, config, model))(state, tiny_data)
  terms = _summed_terms(config, steps=1) // k
  _assert_fp32_close(got, by_hand, terms, what='member gradients')
  _assert_not_fp32_close(got, jax.tree.map(lambda g: jnp.roll(g, 1, axis=0), by_hand), terms,
                         what='member gradients (members mixed up)')


def test_gradient_coherence_of_known_gradients():
  """Parallel members: cosine 1 and a step K times one member's; orthogonal: cosine 0,
  sqrt(K); a member and its negative: cosine -1, no step. Per layer and over all."""
  k = 4
  scales = jnp.arange(1.0, k + 1)[:, None]  # members of different sizes, one direction
  parallel = {'stem': {'kernel': scales * jnp.ones((k, 6))},
              'classifier': {'bias': scales * jnp.array([1.0, -2.0, 0.5])}}
  out = train.gradient_coherence(parallel)
  assert set(out) == {f'{n}/{m}' for n in ('stem', 'classifier', 'all')
                      for m in ('cosine', 'step_multiple')}
  for name in ('stem', 'classifier', 'all'):
    assert float(out[f'{name}/cosine']) == pytest.approx(1.0, abs=1e-6)
    assert float(out[f'{name}/step_multiple']) == pytest.approx(k, rel=1e-6)
  orthogonal = train.gradient_coherence({'stem': {'kernel': 3 * jnp.eye(k)}})
  assert float(orthogonal['all/cosine']) == pytest.approx(0.0, abs=1e-7)
  assert float(orthogonal['all/step_multiple']) == pytest.approx(np.sqrt(k), rel=1e-6)
  opposite = train.gradient_coherence({'stem': {'kernel': jnp.array([[1.0, 2.0], [-1.0, -2.0]])}})
  assert float(opposite['stem/cosine']) == pytest.approx(-1.0, abs=1e-6)
  assert float(opposite['stem/step_multiple']) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('fields,match', [
    ({'train.shared_layers': 'median'}, "train.shared_layers='median' is not one of"),
    ({'train.shared_layers': 'mean', 'sampling.method': 'uniform'},
     "steps after every micro-batch already: use train.shared_layers='sum'"),
    ({'train.shared_layers': 'every_micro_step', 'fewshot.split_edge': 0},
     'not implemented for few-shot sub-networks: set fewshot.split_edge=-1'),
])
def test_shared_layers_refuses_what_it_cannot_do(tiny_config, fields, match):
  with pytest.raises(config_lib.ConfigError, match=re.escape(match)):
    config_lib.validate(tiny_config(**fields))
  for mode in config_lib.SHARED_LAYER_MODES:
    config_lib.validate(tiny_config(**{'train.shared_layers': mode}))


def test_uniform_sampling_steps_every_micro_batch(base, tiny_config, tiny_data):
  """Uniform sampling: one micro-batch per optimizer step, and every step changes the weights."""
  config, model, tx, state = _setup(base, tiny_config, tiny_data, {'sampling.method': 'uniform'})
  assert config_lib.group_size(config) == 1
  step = fast_jit(functools.partial(train.fair_group_step, config, model, tx))
  paths = []
  for i in range(3):
    images, _, path, _ = train.group_inputs(config, tiny_data, state.seed, state.step)
    assert images.shape == (1, 8, 32, 32, 3) and path.shape == (1, 6)
    paths.append(np.asarray(path[0]))
    new, _ = step(state, tiny_data)
    assert int(new.step) == i + 1
    assert _max_change(new.params['stem'], state.params['stem']) > 0
    assert _max_change(new.params['classifier'], state.params['classifier']) > 0
    state = new
  assert len({tuple(p) for p in paths}) > 1


def test_group_inputs_walk_the_epoch_without_repeats(tiny_config, tiny_data):
  """Member k of step s is micro-batch s*K+k: one epoch's groups never repeat an image,
  and each member's paths column is a permutation of the allowed ops."""
  config = tiny_config(**{'space.masked_ops': 'none'})
  n = tiny_data.num_train
  ids = np.zeros((n, 32, 32, 3), np.uint8)
  ids[:, 0, 0, 0], ids[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
  data = tiny_data.replace(train_images=jnp.asarray(ids))
  seen = []
  for s in range(n // 8 // 4):  # whole groups of 4 micro-batches within the first epoch
    images, labels, paths, keys = train.group_inputs(config, data, jnp.int32(0), jnp.int32(s))
    assert images.shape == (4, 8, 32, 32, 3) and paths.shape == (4, 6) and keys.shape[0] == 4
    np.testing.assert_array_equal(np.sort(paths, axis=0), np.tile([[1], [2], [3], [4]], 6))
    index = np.asarray(images[..., 0, 0, 0], int) + 256 * np.asarray(images[..., 0, 0, 1], int)
    np.testing.assert_array_equal(labels, np.asarray(tiny_data.train_labels)[index])
    seen.append(index)
  seen = np.concatenate(seen).ravel()
  assert len(np.unique(seen)) == len(seen)


# -------------------------------------------------------------- optimizer and schedule


def test_weight_decay_mask_hits_only_kernels(base):
  """The decay mask is True for conv and Dense kernels, False for BN params and biases."""
  params = base[3].params
  mask = _leaves(train.weight_decay_mask(params))
  shapes = {k: v.shape for k, v in _leaves(params).items()}
  assert mask['stem/kernel'] and mask['classifier/kernel']
  assert mask['reduction_1/conv_a/kernel'] and mask['reduction_2/shortcut/kernel']
  assert mask['cell_0_0/edge_3_2/ops_nor_conv_3x3/Conv_0/kernel']
  assert not mask['classifier/bias'] and not mask['stem_bn/scale'] and not mask['head_bn/bias']
  assert not mask['reduction_1/bn_b/scale']
  for name, decayed in mask.items():
    assert bool(decayed) == (len(shapes[name]) in (2, 4)), name


def test_weight_decay_applies_only_to_kernels(base, tiny_config, tiny_data):
  """With zero gradients one SGD step shrinks kernels by lr*wd and leaves BN/bias params."""
  config = tiny_config(**{'train.weight_decay': 0.1, 'train.momentum': 0.0})
  tx = train.create_optimizer(config, tiny_data.num_train)
  params = base[3].params
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  lr0 = config.train.lr
  for name, update in _leaves(updates).items():
    p = _leaves(params)[name]
    if name.endswith('kernel'):
      np.testing.assert_allclose(update, -lr0 * 0.1 * p, rtol=1e-5, atol=1e-9, err_msg=name)
    else:
      np.testing.assert_array_equal(update, 0, err_msg=name)


def test_lr_schedule_cosine():
  """No warm-up: starts at lr, halfway at the mean of lr and lr_min, ends at lr_min."""
  config = config_lib.base_config()  # 250 epochs, batch 256, fair groups of 5
  num_train = 45000
  steps = train.total_steps(config, num_train)
  assert steps == 250 * (45000 // 256) // 5
  schedule = train.learning_rate_schedule(config, num_train)
  values = np.asarray([schedule(i) for i in range(0, steps + 1, 25)])
  np.testing.assert_allclose(values[0], 0.025, rtol=1e-6)
  np.testing.assert_allclose(schedule(steps), 1e-5, rtol=1e-3)
  np.testing.assert_allclose(schedule(steps // 2), (0.025 + 1e-5) / 2, rtol=1e-3)
  assert (np.diff(values) <= 0).all()


def test_lr_schedule_warmup():
  """5 warm-up epochs: starts near 0, rises linearly to lr at the end of epoch 5, then decays."""
  config = config_lib.base_config()
  config.train.warmup_epochs = 5
  num_train = 45000
  steps = train.total_steps(config, num_train)
  warmup = steps * 5 // 250
  schedule = train.learning_rate_schedule(config, num_train)
  assert float(schedule(0)) < 1e-6
  np.testing.assert_allclose(schedule(warmup // 2), 0.025 / 2, rtol=1e-2)
  np.testing.assert_allclose(schedule(warmup), 0.025, rtol=1e-6)
  values = np.asarray([schedule(i) for i in range(0, steps + 1, 5)])
  assert values.max() == pytest.approx(0.025, rel=1e-6)
  peak = int(np.argmax(values))
  assert (np.diff(values[:peak + 1]) > 0).all() and (np.diff(values[peak:]) <= 0).all()
  np.testing.assert_allclose(schedule(steps), 1e-5, rtol=1e-3)


def test_warmup_must_end_before_the_run():
  """Warm-up over every epoch leaves no cosine phase: validate() refuses it; 4 of 5 build."""
  config = config_lib.base_config()
  config.train.epochs, config.train.warmup_epochs = 5, 5
  with pytest.raises(config_lib.ConfigError, match='warmup_epochs'):
    config_lib.validate(config)
  config.train.warmup_epochs = 4
  config_lib.validate(config)
  train.create_optimizer(config, 45000)


def test_too_few_micro_batches_for_one_group_is_a_clear_error():
  """1 epoch of 4 micro-batches cannot fill a group of 5: a ConfigError says so."""
  config = config_lib.base_config()
  config.train.epochs, config.train.batch_size = 1, 10
  config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match='no fair group of 5'):
    train.total_steps(config, 40)
  with pytest.raises(config_lib.ConfigError, match='no fair group of 5'):
    train.create_optimizer(config, 40)


def test_create_model_follows_the_config(tiny_config):
  """Model fields come from the config: ops allowed, LT, padding, node reduction, precision."""
  config = tiny_config(**{'space.masked_ops': 'none', 'model.lt_skip': True,
                          'model.pool_exclude_padding': False, 'model.node_reduction': 'mean'})
  model = train.create_model(config)
  assert model.allowed_ops == (1, 2, 3, 4) and model.lt_skip and not model.lt_pool
  assert not model.pool_exclude_padding and model.node_reduction == 'mean'
  assert model.dtype == jnp.float32 and model.channels == 4 and model.cells_per_stage == 1
  config.train.precision = 'bf16'
  assert train.create_model(config).dtype == jnp.bfloat16


# -------------------------------------------------------------------- the run loop


RUN_FIELDS = {'train.epochs': 2, 'train.lr': 0.05, 'train.checkpoint_every_steps': 6}
STOP_AT = 5


@pytest.fixture(scope='module')
def runs(tiny_config, tmp_path_factory):
  """One uninterrupted tiny run, and one stopped after STOP_AT steps then resumed.

  Both runs first stop at step 0 (init and a step-0 checkpoint), so that all their
  training starts from restored arrays: restored arrays carry a committed sharding,
  which changes XLA's compilation-cache key, and the two runs then share one
  compiled step instead of compiling it twice.
  """
  config = tiny_config(**RUN_FIELDS)
  full_dir = str(tmp_path_factory.mktemp('full'))
  start = train.train(config, full_dir, stop_after_steps=0)
  full = train.train(config, full_dir)
  split_dir = str(tmp_path_factory.mktemp('split'))
  train.train(config, split_dir, stop_after_steps=0)
  partial = train.train(config, split_dir, stop_after_steps=STOP_AT)
  partial_trained = workdir_lib.is_trained(split_dir)
  resumed = train.train(config, split_dir)
  return dict(config=config, full_dir=full_dir, start=start, full=full, split_dir=split_dir,
              partial=partial, partial_trained=partial_trained, resumed=resumed)


def test_a_resumed_run_saves_the_checkpoints_of_an_uninterrupted_one(runs):
  """Stopped off the checkpoint grid (STOP_AT), the resumed run saves on the grid again,
  so eval.average_checkpoints finds the same steps as in the uninterrupted run."""
  assert STOP_AT % RUN_FIELDS['train.checkpoint_every_steps']
  saved = {name: checkpoint.saved_steps(os.path.join(runs[name], 'checkpoints'))
           for name in ('full_dir', 'split_dir')}
  assert saved['split_dir'] == saved['full_dir'], saved


def test_tiny_run_lowers_the_loss(runs):
  """The logged training loss of the last steps is well below that of the first steps."""
  losses = _tb_scalars(runs['full_dir'], 'train/loss')
  steps = train.total_steps(runs['config'], 350)
  assert sorted(losses) == list(range(1, steps + 1))  # log_every_steps=1
  values = [losses[s] for s in sorted(losses)]
  assert np.isfinite(values).all()
  assert np.mean(values[-3:]) < np.mean(values[:3]) - 0.1
  assert values[0] == pytest.approx(np.log(10), abs=0.3)  # starts near chance
  assert int(np.asarray(runs['start'].step)[0]) == 0


def test_run_writes_checkpoints_events_and_records(runs):
  """The workdir holds the newest checkpoints, TB events, config/run records, TRAINED."""
  wd, config = runs['full_dir'], runs['config']
  steps = train.total_steps(config, 350)
  assert int(np.asarray(runs['full'].step)[0]) == steps
  ckpts = sorted(int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit())
  assert ckpts[-1] == steps and len(ckpts) == config.train.keep_checkpoints
  assert glob.glob(os.path.join(wd, 'tb', 'events.out.tfevents.*'))
  assert set(_tb_scalars(wd, 'train/learning_rate')) == set(range(1, steps + 1))
  assert os.path.isfile(os.path.join(wd, 'config.json'))
  assert os.path.isfile(os.path.join(wd, 'run_info.json'))
  with open(os.path.join(wd, workdir_lib.TRAINED_MARKER)) as f:
    assert int(f.read()) == steps


def test_run_logs_update_norms_every_step_and_member_gradients_at_probe_steps(runs):
  """TensorBoard: the update norm of the shared layers and of the cell ops (and each over
  its weights' norm) at every step; the cosine and step multiple of the shared layers'
  member gradients at the probe steps, per layer and over all."""
  wd = runs['full_dir']
  steps = train.total_steps(runs['config'], 350)
  for part in ('shared', 'cells'):
    norms = _tb_scalars(wd, f'train/update_norm/{part}')
    assert sorted(norms) == list(range(1, steps + 1)) and min(norms.values()) > 0
    assert set(_tb_scalars(wd, f'train/relative_update/{part}')) == set(norms)
  probed = {s + 1 for s in train.probe_steps(steps)}
  assert len(probed) >= 5
  k = config_lib.group_size(runs['config'])
  for layer in train.SHARED_LAYERS + ('all',):
    cosines = _tb_scalars(wd, f'train/shared_grads/{layer}/cosine')
    multiples = _tb_scalars(wd, f'train/shared_grads/{layer}/step_multiple')
    assert set(cosines) == set(multiples) == probed, layer
    assert all(-1 <= v <= 1 for v in cosines.values())
    assert all(0 <= v <= k + 1e-4 for v in multiples.values())


def test_every_micro_step_run_trains_saves_and_resumes(tiny_config, tmp_path, monkeypatch):
  """A train.shared_layers='every_micro_step' run stops, resumes from its checkpoint
  (the two-part optimizer state) and finishes, logging its update norms."""
  # Two ops (|O| = 2 micro-steps a step): the smallest program with both optimizer parts;
  # 100 training images: 12 micro-batches, 6 steps (XLA:CPU runs scanned convolutions slowly).
  config = tiny_config(**{'train.shared_layers': 'every_micro_step',
                          'space.masked_ops': 'none,avg_pool_3x3,nor_conv_1x1',
                          'data.synthetic_size': 150})
  wd = str(tmp_path / 'run')
  # The scanned micro-steps: on this tiny net they compile ~4x faster than unrolled.
  monkeypatch.setattr(train, 'unroll_micro_steps', lambda: False)
  partial = train.train(config, wd, stop_after_steps=3)
  states = train.train(config, wd)
  steps = train.total_steps(config, 100)
  assert steps == 6
  assert int(np.asarray(states.step)[0]) == steps and workdir_lib.is_trained(wd)
  assert set(states.opt_state) == {'shared', 'cells'}
  assert _max_change(states.params, partial.params) > 1e-4
  assert sorted(_tb_scalars(wd, 'train/update_norm/shared')) == list(range(1, steps + 1))


def test_interrupted_and_resumed_run_equals_uninterrupted(runs):
  """Stopping after STOP_AT steps and resuming gives the uninterrupted run's state."""
  assert int(np.asarray(runs['partial'].step)[0]) == STOP_AT
  assert not runs['partial_trained']
  full, resumed = runs['full'], runs['resumed']
  assert int(np.asarray(resumed.step)[0]) == int(np.asarray(full.step)[0])
  assert _max_change(full.params, runs['partial'].params) > 1e-4  # the stop was real
  _assert_close(resumed.params, full.params, rtol=0, atol=1e-6, what='params')
  _assert_close(resumed.batch_stats, full.batch_stats, rtol=0, atol=1e-6, what='batch_stats')
  _assert_close(resumed.opt_state, full.opt_state, rtol=0, atol=1e-6, what='opt_state')
  assert workdir_lib.is_trained(runs['split_dir'])


def test_a_compiled_train_step_is_reused_only_for_the_same_program(runs, tiny_config,
                                                                  tmp_path, monkeypatch):
  """train.train in the same process reuses a compiled train step only where the
  program is the same (train.program_key): the runs' config compiles nothing again,
  another learning rate compiles its own step, and the reused step gives what a
  fresh compile gives. A key that ignored the config (the wrong variant) would hand
  the other learning rate the runs' step: caught by the comparison."""
  compiles = []
  real_make = train.make_train_chunk

  def counting_make(*args, **kwargs):
    compiles.append(1)
    return real_make(*args, **kwargs)
  monkeypatch.setattr(train, 'make_train_chunk', counting_make)

  def one_step(config, name):
    del compiles[:]
    wd = str(tmp_path / name)
    train.train(config, wd, stop_after_steps=0)  # steps from restored arrays, as runs' do
    return train.train(config, wd, stop_after_steps=1), len(compiles)

  same, compiled = one_step(runs['config'], 'same')
  assert compiled == 0  # the runs fixture compiled this program
  other_config = tiny_config(**dict(RUN_FIELDS, **{'train.lr': 0.5}))
  fresh, compiled = one_step(other_config, 'fresh')
  assert compiled == 1
  reused, compiled = one_step(other_config, 'reused')
  assert compiled == 0
  _assert_close(reused.params, fresh.params, rtol=0, atol=0, what='params')
  _assert_close(reused.opt_state, fresh.opt_state, rtol=0, atol=0, what='opt_state')

  real_key = train.program_key
  monkeypatch.setattr(train, 'program_key',  # wrong: every config keyed as the runs'
                      lambda kind, config, *a, **k: real_key(kind, runs['config'], *a, **k))
  wrong, compiled = one_step(other_config, 'wrong')
  assert compiled == 0
  assert _max_change(wrong.params, fresh.params) > 1e-6
  _assert_close(wrong.params, same.params, rtol=0, atol=0, what='params')


def test_program_key_names_what_the_program_depends_on(base, tiny_config, tiny_data):
  config, _, _, state = base
  states = jax.tree.map(lambda x: x[None], state)
  key = train.program_key('train', config, 10, states, tiny_data)
  assert key == train.program_key('train', tiny_config(), 10, states, tiny_data)
  committed = jax.device_put(states, jax.devices()[0])
  as_f16 = jax.tree.map(lambda x: x.astype(jnp.float16) if x.dtype == jnp.float32 else x,
                        states)
  for other in [train.program_key('probe', config, 10, states, tiny_data),
                train.program_key('train', tiny_config(**{'train.lr': 0.5}), 10, states,
                                  tiny_data),
                train.program_key('train', config, 11, states, tiny_data),
                train.program_key('train', config, 10, as_f16, tiny_data),
                train.program_key('train', config, 10, committed, tiny_data),
                train.program_key('train', config, 10, states, tiny_data, mesh='a mesh')]:
    assert other != key


def _forbid_training(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('training work started')
  monkeypatch.setattr(train, 'load_device_data', fail)
  monkeypatch.setattr(train, 'init_states', fail)


@pytest.mark.parametrize('field,value', [('train.lr', 0.1), ('space.masked_ops', 'none'),
                                         ('model.lt_skip', True)])
def test_workdir_of_another_config_is_refused(runs, tiny_config, monkeypatch, field, value):
  """A results-changing key differing from config.json: WorkdirError naming it, no writes."""
  _forbid_training(monkeypatch)
  wd = runs['full_dir']
  before = snapshot(wd)
  config = tiny_config(**dict(RUN_FIELDS, **{field: value}))
  with pytest.raises(workdir_lib.WorkdirError, match=field.replace('.', r'\.')):
    train.train(config, wd)
  assert snapshot(wd) == before


def test_workdir_accepts_resumable_key_changes(runs, tiny_config):
  """Changing only logging/checkpoint keys resumes the finished run: same final state."""
  config = tiny_config(**dict(RUN_FIELDS, **{'train.log_every_steps': 7,
                                             'train.checkpoint_every_steps': 9}))
  state = train.train(config, runs['full_dir'])
  _assert_close(state.params, runs['full'].params, rtol=0, atol=0, what='params')


def test_workdir_under_a_file_fails_before_training(tiny_config, tmp_path, monkeypatch):
  """A workdir that cannot be created (its parent is a file) fails before any training."""
  _forbid_training(monkeypatch)
  blocker = tmp_path / 'not_a_folder'
  blocker.write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='not writable'):
    train.train(tiny_config(), str(blocker / 'run'))


def test_read_only_workdir_fails_before_training(tiny_config, tmp_path, monkeypatch):
  """A read-only workdir fails before any training (skipped where chmod does not bind)."""
  _forbid_training(monkeypatch)
  wd = tmp_path / 'ro'
  wd.mkdir()
  wd.chmod(0o555)
  try:
    if os.access(wd, os.W_OK):
      pytest.skip('running as root: chmod does not make the folder read-only')
    with pytest.raises(workdir_lib.WorkdirError, match='not writable'):
      train.train(tiny_config(), str(wd))
    assert not os.listdir(wd)
  finally:
    wd.chmod(0o755)


@pytest.mark.parametrize('content', ['garbage', 'missing_keys', 'wrong_dtype', 'absent'])
def test_bad_npz_input_raises_data_error(tiny_config, tmp_path, monkeypatch, content):
  """Unreadable, incomplete, mistyped or missing .npz files surface as data.DataError."""
  monkeypatch.setattr(train, 'init_states', lambda *a, **k: pytest.fail('training started'))
  path = tmp_path / 'cifar.npz'
  rng = np.random.default_rng(0)
  arrays = dict(x_train=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
                y_train=np.arange(20) % 10, x_test=np.zeros((4, 32, 32, 3), np.uint8),
                y_test=np.zeros(4, np.int64))
  if content == 'garbage':
    path.write_bytes(b'PK\x03\x04 this is not a zip archive')
  elif content == 'missing_keys':
    np.savez(path, x_train=arrays['x_train'], y_train=arrays['y_train'])
  elif content == 'wrong_dtype':
    np.savez(path, **dict(arrays, x_train=arrays['x_train'].astype(np.float32)))
  config = tiny_config(**{'data.source': 'npz', 'data.path': str(path), 'data.val_size': 5})
  with pytest.raises(data_lib.DataError):
    train.train(config, str(tmp_path / 'run'))
