"""The worker's counters: counted per request in a plain list, published to the
stats words once per round of the event loop."""

from __future__ import annotations

from bisect import bisect_left

import pytest

from shared.stats import DURATION_BUCKETS, METHODS, Field, request_offset
from worker.counters import WorkerCounters
from worker.loop import EventLoop

GET_2XX = request_offset(METHODS.index("GET"), 2)


def test_counts_reach_the_words_when_published():
    counters = WorkerCounters()
    counters.request("GET", 200, 0.002)
    counters.request("GET", 204, 0.002)
    counters.bytes_out(1500)
    counters.keepalive_reuse()
    assert counters.words[GET_2XX] == 0          # not before the round ends
    counters.publish()
    assert counters.words[GET_2XX] == 2
    assert counters.words[Field.BYTES_OUT] == 1500
    assert counters.words[Field.KEEPALIVE_REUSES] == 1
    assert counters.words[Field.DURATION_SUM_US] == 4000
    assert not any(counters.pending)



def test_each_word_counted_in_a_round_is_published_with_its_sum():
    counters = WorkerCounters()
    counters.bytes_out(0)            # counts nothing
    counters.bytes_out(5)
    counters.bytes_out(7)
    counters.accepted()
    counters.publish()
    assert counters.words[Field.BYTES_OUT] == 12
    assert counters.words[Field.ACCEPTED] == 1
    counters.bytes_out(1)            # the next round: that word alone
    counters.publish()
    assert counters.words[Field.BYTES_OUT] == 13
    assert counters.words[Field.ACCEPTED] == 1
    assert not any(counters.pending)

@pytest.mark.parametrize("seconds", [0.0, 0.0001, 0.0005, 0.00050001, 0.003, 0.5, 1.0,
                                     9.99, 10.0, 10.5, 3600.0])
def test_a_duration_lands_in_the_first_bucket_not_below_it(seconds):
    counters = WorkerCounters()
    counters.request("GET", 200, seconds)
    counters.publish()
    bucket = bisect_left(DURATION_BUCKETS, seconds)    # Prometheus' "le" buckets
    counted = [index for index in range(len(DURATION_BUCKETS) + 1)
               if counters.words[Field.DURATION + index]]
    assert counted == [bucket]


def test_publishing_adds_to_what_is_there_and_twice_adds_nothing():
    counters = WorkerCounters()
    counters.words[Field.ACCEPTED] = 7        # e.g. counts of an earlier round
    counters.accepted()
    counters.publish()
    counters.publish()
    assert counters.words[Field.ACCEPTED] == 8


def test_the_loop_publishes_at_the_end_of_every_round():
    loop = EventLoop()
    counters = WorkerCounters()
    loop.after_round.append(counters.publish)
    try:
        counters.bytes_in(10)
        loop.run_once(0)
        assert counters.words[Field.BYTES_IN] == 10
        counters.bytes_in(5)
        loop.run_once(0)
        assert counters.words[Field.BYTES_IN] == 15
    finally:
        loop.close()
