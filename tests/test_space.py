"""Tests of spos_jax.space: arch strings and arrays, dead archs, op names, masks, cosets."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spos_jax import space

# An arch of the NB201 paper (its best CIFAR-10 cell) and its array.
KNOWN = ('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+'
         '|skip_connect~0|nor_conv_3x3~1|skip_connect~2|')
KNOWN_ARCH = [3, 3, 4, 1, 3, 1]


def test_known_string_parses_to_edges_in_nb201_order():
  """Edge order is 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 and op indices follow OPS."""
  np.testing.assert_array_equal(space.string_to_arch(KNOWN), KNOWN_ARCH)
  assert space.arch_to_string(KNOWN_ARCH) == KNOWN


def test_round_trip_of_all_archs():
  """string -> array -> string is the identity for all 15625 archs, strings distinct."""
  archs = space.all_archs()
  assert archs.shape == (15625, 6) and len(np.unique(space.arch_code(archs))) == 15625
  strings = [space.arch_to_string(a) for a in archs]
  assert len(set(strings)) == 15625
  back = np.stack([space.string_to_arch(s) for s in strings])
  np.testing.assert_array_equal(back, archs)
  assert back.dtype == np.int32


def _dead_by_paths(arch):
  """Dead iff every node-0 -> node-3 path crosses a 'none' edge (4 paths, by hand)."""
  paths = ((3,), (0, 4), (1, 5), (0, 2, 5))
  return all(any(arch[e] == space.NONE for e in p) for p in paths)


def test_341_dead_archs():
  """is_dead marks exactly the 341 archs without a live path, as a path count agrees."""
  archs = space.all_archs()
  dead = space.is_dead(archs)
  assert dead.sum() == 341
  np.testing.assert_array_equal(dead, [_dead_by_paths(a) for a in archs])
  assert space.is_dead(np.zeros(6, int)) and not space.is_dead(np.ones(6, int))
  # Batched input keeps its leading axes.
  assert space.is_dead(archs.reshape(125, 125, 6)).shape == (125, 125)


@pytest.mark.parametrize('name,index', [
    ('none', 0), ('zero', 0), ('skip_connect', 1), ('skip', 1), ('nor_conv_1x1', 2),
    ('1x1', 2), ('conv1x1', 2), ('nor_conv_3x3', 3), ('3x3', 3), ('conv3x3', 3),
    ('avg_pool_3x3', 4), ('pool', 4), ('avg_pool', 4), (' Pool ', 4), ('SKIP', 1)])
def test_op_index_names_and_aliases(name, index):
  """NB201 names and short aliases (any case, padded) map to the OPS index."""
  assert space.op_index(name) == index


def test_unknown_op_name_lists_valid_ops():
  """An unknown op name raises ArchError naming it and every valid op."""
  with pytest.raises(space.ArchError) as info:
    space.op_index('conv5x5')
  message = str(info.value)
  assert 'conv5x5' in message
  for op in space.OPS:
    assert op in message


def test_parse_op_list():
  """Comma or '+' lists and name sequences give sorted unique indices; '' masks nothing."""
  assert space.parse_op_list('avg_pool_3x3,none') == (0, 4)
  assert space.parse_op_list('pool+zero, pool') == (0, 4)
  assert space.parse_op_list(['3x3', 'skip']) == (1, 3)
  assert space.parse_op_list('') == ()


@pytest.mark.parametrize('masked,allowed', [
    ('', (0, 1, 2, 3, 4)), ('none', (1, 2, 3, 4)), ('none,avg_pool_3x3', (1, 2, 3)),
    ('zero,pool,skip', (2, 3)), (['1x1', '3x3'], (0, 1, 4))])
def test_allowed_ops_from_mask(masked, allowed):
  """Masking removes exactly the named ops."""
  assert space.allowed_ops_from_mask(masked) == allowed


@pytest.mark.parametrize('masked', [
    ','.join(space.OPS), 'none,skip,1x1,3x3', 'skip,1x1,3x3,pool', ['zero', '1x1', '3x3', 'pool']])
def test_allowed_ops_from_mask_needs_two_ops(masked):
  """Fewer than two remaining ops is an ArchError that says so."""
  with pytest.raises(space.ArchError, match='at least two'):
    space.allowed_ops_from_mask(masked)


@pytest.mark.parametrize('masked', ['', 'none,avg_pool_3x3', 'skip', 'none,skip,pool'])
def test_cosets_partition_the_allowed_subset(masked):
  """Cosets of the coset bases cover the allowed subset exactly once; each is fair per edge."""
  allowed = space.allowed_ops_from_mask(masked)
  k = len(allowed)
  archs = space.all_archs()
  subset = archs[space.uses_only(archs, allowed)]
  assert len(subset) == k ** 6
  bases = np.unique(space.coset_base(subset, allowed), axis=0)
  assert len(bases) == k ** 5
  members = space.coset_members(bases, allowed)
  assert members.shape == (k ** 5, k, 6)
  codes = space.arch_code(members.reshape(-1, 6))
  assert len(np.unique(codes)) == len(codes)  # no arch in two cosets, none twice
  np.testing.assert_array_equal(np.sort(codes), np.sort(space.arch_code(subset)))
  # Every coset uses each allowed op exactly once at every edge...
  np.testing.assert_array_equal(np.sort(members, axis=1),
                                np.broadcast_to(np.asarray(allowed)[:, None], members.shape))
  # ...and its members all have the same base, which is one of them.
  np.testing.assert_array_equal(space.coset_base(members, allowed),
                                np.broadcast_to(bases[:, None], members.shape))
  assert (members[:, 0] == bases).all()


def test_coset_members_of_one_arch():
  """The coset of an arch shifts every edge by one allowed position per member."""
  members = space.coset_members(np.array([1, 2, 3, 1, 1, 2]), (1, 2, 3))
  np.testing.assert_array_equal(members, [[1, 2, 3, 1, 1, 2],
                                          [2, 3, 1, 2, 2, 3],
                                          [3, 1, 2, 3, 3, 1]])


@pytest.mark.parametrize('text', [
    '',
    '|none~0|',
    '|none~0|+|none~0|none~1|',  # two node groups
    '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|',  # four
    '|none~0|+|none~0|none~1|+|none~0|none~1|',  # node 3 with two inputs
    '|none~0|+|none~0|+|none~0|none~1|none~2|',  # node 2 with one input
    '|none~1|+|none~0|none~1|+|none~0|none~1|none~2|',  # wrong source node
    '|none~0|+|none~0|none~1|+|none~0|none~2|none~1|',  # sources out of order
    '|none0|+|none~0|none~1|+|none~0|none~1|none~2|',  # no '~'
    '|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|',  # unknown op
    '|pool~0|+|none~0|none~1|+|none~0|none~1|none~2|',  # aliases are not NB201 names
    'none~0|+|none~0|none~1|+|none~0|none~1|none~2|',  # missing leading '|'
    '|none~0+|none~0|none~1|+|none~0|none~1|none~2|',  # missing trailing '|'
    '|+||+|||',
    '+++',
    '| none~0|+|none~0|none~1|+|none~0|none~1|none~2|',
])
def test_string_to_arch_rejects_malformed(text):
  """Malformed arch strings raise ArchError (a ValueError), never parse to an arch."""
  with pytest.raises(space.ArchError):
    space.string_to_arch(text)


@pytest.mark.parametrize('value', [None, 123, b'|none~0|', ['|none~0|']])
def test_string_to_arch_rejects_non_strings(value):
  """Non-str input is an ArchError naming the type."""
  with pytest.raises(space.ArchError, match='must be str'):
    space.string_to_arch(value)


@pytest.mark.parametrize('arch', [[0] * 5, [0] * 7, [5, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0],
                                  [0.0] * 6, [[0] * 6]])
def test_arch_to_string_rejects_invalid_arrays(arch):
  """Arrays of the wrong length, dtype or range raise ArchError."""
  with pytest.raises(space.ArchError):
    space.arch_to_string(arch)


_PIECES = st.sampled_from(list(space.OPS) + ['|', '+', '~', '0', '1', '2', '3', 'x', ' ', ''])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(_PIECES, max_size=30).map(''.join)))
def test_string_to_arch_raises_only_arch_error(text):
  """Any text either parses to a valid [6] arch that round-trips, or raises ArchError."""
  try:
    arch = space.string_to_arch(text)
  except space.ArchError:
    return
  assert arch.shape == (6,) and arch.min() >= 0 and arch.max() < space.NUM_OPS
  assert space.arch_to_string(arch) == text.strip()


def test_nb201_index_lookup():
  """nb201_index maps archs to their row in a table order, and rejects missing ones."""
  table = space.all_archs()[::-1]
  idx = space.nb201_index(np.array([KNOWN_ARCH, [0] * 6]), table)
  np.testing.assert_array_equal(table[idx], [KNOWN_ARCH, [0] * 6])
  with pytest.raises(space.ArchError, match='not in the bench'):
    space.nb201_index(np.array([KNOWN_ARCH]), table[:100])
  assert space.OPS == ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3',
                       'avg_pool_3x3')


# ------------------------------------------------------------- isomorphism classes


def test_the_whole_space_has_6466_isomorphism_classes():
  """The count of the NB201 authors and Ning et al.; ids 0..6465 numbered by first member."""
  classes = space.isomorphism_class(space.all_archs())
  assert len(np.unique(classes)) == space.NUM_UNIQUE_ARCHS == 6466
  first = np.unique(classes, return_index=True)[1]
  np.testing.assert_array_equal(classes[np.sort(first)], np.arange(6466))
  # Dead archs compute zero, but NB201's rule counts zero terms: 5 classes, not 1.
  assert len(np.unique(classes[space.is_dead(space.all_archs())])) == 5


@pytest.mark.parametrize('a,b', [
    # A skip chain collapses: skip into node 1 then conv3x3 to the output = conv3x3 direct.
    ('|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|',
     '|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|'),
    # Edges that cannot reach the output do not count (node 2 feeds node 3 through none).
    ('|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|',
     '|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|'),
    # A sum does not depend on which edge holds which term (node 1 is the input).
    ('|skip_connect~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|',
     '|skip_connect~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|'),
    # The same, across the middle nodes: both reach node 3 as conv1x1 of the input.
    ('|skip_connect~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|',
     '|skip_connect~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|'),
])
def test_isomorphic_pairs(a, b):
  arch_a, arch_b = space.string_to_arch(a), space.string_to_arch(b)
  assert space.cell_expression(arch_a) == space.cell_expression(arch_b)
  assert space.isomorphism_class(arch_a) == space.isomorphism_class(arch_b)


@pytest.mark.parametrize('a,b', [
    # Order along a chain matters: conv3x3 then pool is not pool then conv3x3.
    ('|nor_conv_3x3~0|+|none~0|none~1|+|none~0|avg_pool_3x3~1|none~2|',
     '|avg_pool_3x3~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|'),
    # Two parallel convs are not a chain of two.
    ('|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|skip_connect~1|none~2|',
     '|nor_conv_3x3~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|'),
    # NB201's rule, kept for its count: node 2 (both inputs none) is zero, yet a skip from
    # it adds a zero term '#+#' that none would write as '#': the same function, two classes.
    ('|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|',
     '|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|'),
])
def test_pairs_that_are_not_isomorphic(a, b):
  arch_a, arch_b = space.string_to_arch(a), space.string_to_arch(b)
  assert space.isomorphism_class(arch_a) != space.isomorphism_class(arch_b)


def test_cell_expression_by_hand():
  arch = space.string_to_arch(KNOWN)  # NB201's best CIFAR-10 cell
  # n1 = (0)@conv; n2 = sorted sum of (n1)@pool and (0)@conv; n3 = n2 (skip, inlined as
  # it is) + (n1)@conv + 0 (skip from the input), the three terms sorted.
  n2 = '((0)@nor_conv_3x3)@avg_pool_3x3+(0)@nor_conv_3x3'
  assert space.cell_expression(arch) == f'{n2}+((0)@nor_conv_3x3)@nor_conv_3x3+0'
