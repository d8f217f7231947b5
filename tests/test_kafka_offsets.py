"""Offset lookup of a window: a cluster that is settling (leader election) is waited out, a real error is not."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from forensics.sources.kafka import _offsets_for_times


class _ElectingConsumer:
    """Answers like a broker whose partition leader is being elected for the first ``failures`` calls."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION):
        self.failures, self.code, self.calls = failures, code, 0

    def offsets_for_times(self, partitions, timeout):
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return partitions


def test_a_leader_election_is_waited_out():
    consumer = _ElectingConsumer(failures=2)
    assert _offsets_for_times(consumer, ["tp"], time.monotonic() + 10) == ["tp"]
    assert consumer.calls == 3


def test_a_settling_cluster_still_failing_at_the_deadline_is_raised():
    consumer = _ElectingConsumer(failures=1000)
    with pytest.raises(KafkaException):
        _offsets_for_times(consumer, ["tp"], time.monotonic() + 0.3)
    assert 1 < consumer.calls < 1000


def test_an_error_that_is_not_the_cluster_settling_is_raised_at_once():
    consumer = _ElectingConsumer(failures=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        _offsets_for_times(consumer, ["tp"], time.monotonic() + 10)
    assert consumer.calls == 1
