"""The NAS-Bench-201 cell search space: ops, arch strings and arrays, masks, cosets.

An architecture is an int array of shape [6]: one op index per edge, edges in NB201
string order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 (docs/method.md, 'Search space').
"""
from __future__ import annotations

import functools
import itertools
from typing import Iterable, Sequence

import numpy as np

OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')
OP_INDEX = {name: i for i, name in enumerate(OPS)}
NUM_OPS = len(OPS)
NONE, SKIP, CONV1, CONV3, POOL = range(NUM_OPS)

# (to_node, from_node) of each edge, in arch-string order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_EDGES = len(EDGES)
NUM_NODES = 4
NUM_ARCHS = NUM_OPS ** NUM_EDGES

# Short names that configs and sweep names may use besides the NB201 names.
OP_ALIASES = {
    'zero': 'none', 'skip': 'skip_connect', '1x1': 'nor_conv_1x1',
    'conv1x1': 'nor_conv_1x1', '3x3': 'nor_conv_3x3', 'conv3x3': 'nor_conv_3x3',
    'pool': 'avg_pool_3x3', 'avg_pool': 'avg_pool_3x3',
}


class ArchError(ValueError):
  """An arch string, array or op name that is not part of the search space."""


def op_index(name: str) -> int:
  """Index of an op given by its NB201 name or a short alias ('zero', 'pool', ...)."""
  key = name.strip().lower()
  key = OP_ALIASES.get(key, key)
  if key not in OP_INDEX:
    raise ArchError(
        f'unknown op {name!r}; valid ops: {", ".join(OPS)} '
        f'(aliases: {", ".join(sorted(OP_ALIASES))})')
  return OP_INDEX[key]


def parse_op_list(ops: str | Iterable[str]) -> tuple[int, ...]:
  """'none,avg_pool_3x3' or ['none', 'pool'] -> sorted unique op indices.

  The empty string and the words 'none masked' conventions are not special here:
  '' gives (), so "mask nothing" is written as an empty mask.
  """
  if isinstance(ops, str):
    names = [s for s in ops.replace('+', ',').split(',') if s.strip()]
  else:
    names = list(ops)
  return tuple(sorted({op_index(n) for n in names}))


def allowed_ops_from_mask(masked: str | Iterable[str]) -> tuple[int, ...]:
  """Op indices left after masking; at least two must remain to have a choice."""
  masked_idx = set(parse_op_list(masked))
  allowed = tuple(i for i in range(NUM_OPS) if i not in masked_idx)
  if len(allowed) < 2:
    raise ArchError(
        f'masking {sorted(OPS[i] for i in masked_idx)} leaves '
        f'{[OPS[i] for i in allowed]}: at least two ops must stay allowed')
  return allowed


def arch_to_string(arch: Sequence[int]) -> str:
  """[6] op indices -> NB201 string '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'."""
  arch = validate_arch(arch)
  names = [OPS[i] for i in arch]
  nodes = ['|' + '|'.join(f'{names[e]}~{frm}'
                          for e, (to, frm) in enumerate(EDGES) if to == node) + '|'
           for node in range(1, NUM_NODES)]
  return '+'.join(nodes)


def string_to_arch(text: str) -> np.ndarray:
  """NB201 arch string -> int array [6]; raises ArchError naming what is wrong."""
  if not isinstance(text, str):
    raise ArchError(f'arch string must be str, got {type(text).__name__}')
  parts = text.strip().split('+')
  if len(parts) != NUM_NODES - 1:
    raise ArchError(f'arch string {text!r} must have {NUM_NODES - 1} node groups '
                    f"separated by '+', found {len(parts)}")
  arch = []
  for node, part in enumerate(parts, start=1):
    if len(part) < 2 or not (part.startswith('|') and part.endswith('|')):
      raise ArchError(f'node group {part!r} of {text!r} must look like |op~0|...|')
    tokens = part[1:-1].split('|')
    if len(tokens) != node:
      raise ArchError(f'node {node} of {text!r} must have {node} inputs, '
                      f'found {len(tokens)}')
    for frm, token in enumerate(tokens):
      name, sep, src = token.partition('~')
      if not sep or src != str(frm):
        raise ArchError(f'edge {token!r} of {text!r} must read op~{frm}')
      if name not in OP_INDEX:
        raise ArchError(f'unknown op {name!r} in {text!r}; valid ops: {", ".join(OPS)}')
      arch.append(OP_INDEX[name])
  return np.asarray(arch, np.int32)


def validate_arch(arch: Sequence[int]) -> np.ndarray:
  a = np.asarray(arch)
  if a.shape != (NUM_EDGES,) or not np.issubdtype(a.dtype, np.integer):
    raise ArchError(f'an arch is {NUM_EDGES} integer op indices, got {arch!r}')
  if a.min() < 0 or a.max() >= NUM_OPS:
    raise ArchError(f'op indices must lie in 0..{NUM_OPS - 1}, got {a.tolist()}')
  return a.astype(np.int32)


def all_archs() -> np.ndarray:
  """All 15625 archs as [15625, 6], in lexicographic (base-5) order."""
  return np.asarray(list(itertools.product(range(NUM_OPS), repeat=NUM_EDGES)), np.int32)


def arch_code(archs: np.ndarray) -> np.ndarray:
  """Base-5 integer of each arch ([..., 6] -> [...]); a compact key, not the NB201 index."""
  archs = np.asarray(archs)
  weights = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)
  return (archs * weights).sum(-1)


def nb201_index(archs: np.ndarray, table_archs: np.ndarray) -> np.ndarray:
  """NB201 index of each arch, given the bench's archs [15625, 6] in index order."""
  lookup = np.full(NUM_ARCHS, -1, np.int64)
  lookup[arch_code(table_archs)] = np.arange(len(table_archs))
  idx = lookup[arch_code(archs)]
  if (idx < 0).any():
    missing = np.asarray(archs)[idx < 0][0]
    raise ArchError(f'arch {arch_to_string(missing)} is not in the bench table')
  return idx


def is_dead(archs: np.ndarray) -> np.ndarray:
  """True where no path of non-'none' edges leads from node 0 to node 3."""
  archs = np.asarray(archs)
  live = archs != NONE
  reach = [np.ones(archs.shape[:-1], bool)]
  for node in range(1, NUM_NODES):
    r = np.zeros(archs.shape[:-1], bool)
    for e, (to, frm) in enumerate(EDGES):
      if to == node:
        r |= reach[frm] & live[..., e]
    reach.append(r)
  return ~reach[-1]


# ---------------------------------------------------------------------------
# Isomorphism classes (the unique-architecture protocol)

# Classes of the whole space under `cell_expression`: the count the NB201 authors and
# Ning et al. (2021) use for the "unique" archs.
NUM_UNIQUE_ARCHS = 6466
ZERO_TERM = '#'


def cell_expression(arch: Sequence[int]) -> str:
  """The function a cell computes, written so that isomorphic cells read the same.

  NB201's rule (`CellStructure.to_unique_str(consider_zero=True)` of its API): node 0
  is '0'; each input of a node is a term: '#' (zero) through `none` or from a node
  that is '#', the input node's own expression through `skip_connect` (identity),
  '(<input>)@<op>' through any other op; a node is its terms sorted and joined by '+'
  (a sum does not depend on the order of its inputs). The cell is node 3's
  expression. So edges that cannot reach the output vanish, skip chains collapse and
  the two middle nodes may swap roles. Two details keep the NB201 count of 6466
  classes: zero terms stay as terms ('#+X' is not 'X'), and only a node with one input
  (node 1) can itself become '#'. A finer split than function equality (dropping
  zero terms would leave 5390 classes), never a coarser one.
  """
  arch = validate_arch(arch)
  nodes = ['0']
  for node in range(1, NUM_NODES):
    terms = []
    for e, (to, frm) in enumerate(EDGES):
      if to != node:
        continue
      op = int(arch[e])
      if op == NONE or nodes[frm] == ZERO_TERM:
        terms.append(ZERO_TERM)
      elif op == SKIP:
        terms.append(nodes[frm])
      else:
        terms.append(f'({nodes[frm]})@{OPS[op]}')
    nodes.append('+'.join(sorted(terms)))
  return nodes[-1]


@functools.lru_cache(maxsize=1)
def _class_of_code() -> np.ndarray:
  """Isomorphism class of every arch, indexed by arch_code; read-only."""
  expressions = [cell_expression(a) for a in all_archs()]
  _, first, inverse = np.unique(expressions, return_index=True, return_inverse=True)
  number = np.empty(len(first), np.int64)  # classes numbered by their first member
  number[np.argsort(first, kind='stable')] = np.arange(len(first))
  out = number[inverse.reshape(-1)]
  out.setflags(write=False)
  return out


def isomorphism_class(archs: np.ndarray) -> np.ndarray:
  """Class id of each arch ([..., 6] -> [...]): archs with the same `cell_expression`
  share it. Ids run 0..6465 over the whole space, numbered in `all_archs` order of the
  classes' first members, so an id means the same class in every masked subset."""
  return _class_of_code()[arch_code(validate_archs(archs))]


def validate_archs(archs: np.ndarray) -> np.ndarray:
  """[..., 6] integer op indices in 0..4, else ArchError."""
  a = np.asarray(archs)
  if a.shape[-1:] != (NUM_EDGES,) or not np.issubdtype(a.dtype, np.integer):
    raise ArchError(f'archs are [..., {NUM_EDGES}] integer op indices, got shape {a.shape} '
                    f'of {a.dtype}')
  if a.size and (a.min() < 0 or a.max() >= NUM_OPS):
    raise ArchError(f'op indices must lie in 0..{NUM_OPS - 1}')
  return a


def uses_only(archs: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
  """True where every edge of the arch holds an allowed op."""
  return np.isin(np.asarray(archs), np.asarray(allowed)).all(-1)


def coset_members(base: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
  """The |O| archs {base + t*(1,..,1) mod |O|} in allowed-op positions: [..., |O|, 6].

  At every edge these |O| archs use each allowed op exactly once, so one strictly fair
  group forward scores them all; the cosets partition the allowed subset exactly.
  """
  allowed = np.asarray(allowed)
  pos = np.searchsorted(allowed, np.asarray(base))
  shifts = np.arange(len(allowed))[:, None]
  return allowed[(pos[..., None, :] + shifts) % len(allowed)].astype(np.int32)


def coset_base(archs: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
  """Canonical representative of each arch's coset: the member whose edge 0 op is allowed[0]."""
  allowed = np.asarray(allowed)
  pos = np.searchsorted(allowed, np.asarray(archs))
  return allowed[(pos - pos[..., :1]) % len(allowed)].astype(np.int32)


def pack_fair_groups(archs: np.ndarray, allowed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Pack archs into fair groups of K = |allowed| paths, for one-forward scoring.

  In a fair group every edge column is a permutation of the allowed ops, so the
  fair-group forward runs each op once per edge. Complete cosets become groups as
  they are; the other archs are packed greedily with archs that differ from every
  member at every edge, and the free slots are filled with the ops left over
  (filler paths, scored and discarded).

  Returns paths [G, K, 6] and owner [G, K]: the row of `archs` each path scores,
  -1 for fillers. Every arch is owned exactly once.
  """
  allowed = np.asarray(allowed)
  k = len(allowed)
  archs = np.asarray(archs)
  if not uses_only(archs, allowed).all():
    raise ArchError('an arch to pack uses an op outside the allowed set')
  if len(np.unique(arch_code(archs))) != len(archs):
    raise ArchError('pack_fair_groups needs distinct archs (a coset is complete only '
                    'when all its members are different rows)')
  pos = np.searchsorted(allowed, archs)  # op positions 0..K-1
  groups = []  # lists of rows
  base_codes = arch_code(coset_base(archs, allowed))
  _, inverse, counts = np.unique(base_codes, return_inverse=True, return_counts=True)
  full = counts[inverse] == k
  for code in np.unique(base_codes[full]):
    groups.append(list(np.nonzero(full & (base_codes == code))[0]))
  free = ~full
  for start in np.nonzero(~full)[0]:
    if not free[start]:
      continue
    free[start] = False
    members = [start]
    used = np.zeros((NUM_EDGES, k), bool)
    used[np.arange(NUM_EDGES), pos[start]] = True
    while len(members) < k:
      candidates = np.nonzero(free)[0]
      compatible = ~used[np.arange(NUM_EDGES), pos[candidates]].any(-1)
      if not compatible.any():
        break
      pick = candidates[np.argmax(compatible)]
      free[pick] = False
      members.append(pick)
      used[np.arange(NUM_EDGES), pos[pick]] = True
    groups.append(members)
  paths = np.zeros((len(groups), k, NUM_EDGES), np.int32)
  owner = np.full((len(groups), k), -1, np.int64)
  for g, members in enumerate(groups):
    owner[g, :len(members)] = members
    group_pos = np.zeros((k, NUM_EDGES), np.int64)
    group_pos[:len(members)] = pos[members]
    for e in range(NUM_EDGES):
      left = np.setdiff1d(np.arange(k), pos[members, e])
      group_pos[len(members):, e] = left
    paths[g] = allowed[group_pos]
  return paths, owner
