"""serving.heap: the start-up heap leaves the collector's walk; what is allocated later is still collected."""
import gc
import subprocess
import sys
import weakref

import pytest

from serving.heap import freeze_startup_heap
from tests.helpers import DRISHTI


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


DECODE_FAULTS = """
import resource, sys
from serving.heap import keep_request_buffers
if sys.argv[1] == "kept":
    assert keep_request_buffers()
from preprocessing.decode import decode_image
data = open(sys.argv[2], "rb").read()
decode_image(data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    decode_image(data)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def decode_page_faults(mode: str) -> float:
    photo = DRISHTI / "images" / "drishtiGS_002.jpg"
    out = subprocess.run([sys.executable, "-c", DECODE_FAULTS, mode, str(photo)], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return float(out.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_server_process_reuses_a_decoded_photos_memory_instead_of_faulting_it_in_again():
    """In a process without TensorFlow (the transformer's), glibc maps a decoded photo's 2.7 MB afresh on every
    request: some 1,300 page faults per decode. With the servers' setting, none."""
    assert decode_page_faults("default") > 300
    assert decode_page_faults("kept") < 10
