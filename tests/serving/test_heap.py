"""serving.heap: the start-up heap leaves the collector's walk; what is allocated later is still collected."""
import gc
import weakref

import pytest

from serving.heap import freeze_startup_heap


@pytest.fixture
def thawed():
    yield
    gc.unfreeze()


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_what_exists_is_frozen_and_later_cycles_are_still_collected(thawed):
    before = Node()
    alive = len(gc.get_objects())
    frozen = freeze_startup_heap()
    assert frozen >= alive // 2 > 0  # the heap of this process, not a handful
    later = Node()
    before_ref, later_ref = weakref.ref(before), weakref.ref(later)
    del before, later
    gc.collect()
    assert later_ref() is None  # a version unloaded after start-up is freed
    assert before_ref() is not None  # start-up objects are exempt (they live as long as the process anyway)


def test_full_collection_walks_only_what_came_after(thawed):
    everything = len(gc.get_objects())
    freeze_startup_heap()
    assert len(gc.get_objects()) < everything // 10
