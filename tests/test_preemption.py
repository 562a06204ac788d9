"""spos_jax.preemption: which signals stop work, nesting, and the handlers restored."""
import os
import signal
import threading

import pytest

from spos_jax import preemption


def _send(signum):
  """Deliver signum to this process from another thread, as a cluster or a terminal would."""
  sender = threading.Thread(target=os.kill, args=(os.getpid(), signum))
  sender.start()
  sender.join()


@pytest.mark.parametrize('signum', preemption.SIGNALS)
def test_each_stop_signal_is_recorded_and_the_handlers_restored(signum):
  before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
  wakeup = signal.set_wakeup_fd(-1)
  signal.set_wakeup_fd(wakeup)
  with preemption.PreemptionWatcher() as watcher:
    _send(signum)
    with pytest.raises(preemption.Stopped,
                       match=f'stopped by {signal.Signals(signum).name} while scoring'):
      watcher.stop_if_requested('scoring')
  assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
  assert signal.set_wakeup_fd(wakeup) == wakeup  # the previous wakeup fd is back


def test_an_inner_watcher_leaves_the_stop_to_the_outer_one():
  """Scoring inside the train loop (the ranking trajectory) must not end training
  without its checkpoint: the outer watcher's owner stops at its safe point."""
  with preemption.PreemptionWatcher() as outer:
    with preemption.PreemptionWatcher() as inner:
      _send(signal.SIGTERM)
      inner.stop_if_requested('scoring')  # no Stopped
      assert not inner.requested
    assert outer.requested and outer.signal_name == 'SIGTERM'


def test_an_inner_watcher_stops_where_the_outer_one_lends_its_request():
  """An evaluation watches from its first step (inner_stops=True): the scoring inside
  stops at its next call on a signal that came before it started."""
  with preemption.PreemptionWatcher(inner_stops=True) as outer:
    _send(signal.SIGTERM)
    with preemption.PreemptionWatcher() as inner:
      assert inner.requested and inner.signal_name == 'SIGTERM'
      with pytest.raises(preemption.Stopped, match='stopped by SIGTERM while scoring'):
        inner.stop_if_requested('scoring')
    assert outer.requested
  with preemption.PreemptionWatcher() as alone:  # a request ends with its watcher
    assert not alone.requested
