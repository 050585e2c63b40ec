from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from clarion.core.validation import Violations, parse_timestamp
from clarion.v1 import notifications_pb2


@pytest.mark.parametrize(
    "timestamp",
    [
        timestamp_pb2.Timestamp(seconds=0, nanos=-1),  # nanos out of range
        timestamp_pb2.Timestamp(seconds=-62135510401),  # year 1: arithmetic on it overflows
        timestamp_pb2.Timestamp(seconds=2**62),  # past year 9999
        timestamp_pb2.Timestamp(seconds=-1),  # before 1970
    ],
)
def test_a_time_outside_1970_to_9000_is_a_violation_naming_the_field(timestamp: timestamp_pb2.Timestamp) -> None:
    violations = Violations()
    request = notifications_pb2.GetDeliveryStatsRequest(end_time=timestamp)

    assert parse_timestamp(request, "end_time", violations) is None
    assert [v.field for v in violations.items] == ["end_time"]


def test_a_valid_time_is_an_aware_datetime_and_unset_is_none() -> None:
    violations = Violations()
    request = notifications_pb2.GetDeliveryStatsRequest(end_time=timestamp_pb2.Timestamp(seconds=1_800_000_000))

    assert parse_timestamp(request, "end_time", violations) == datetime.fromtimestamp(1_800_000_000, UTC)
    assert parse_timestamp(request, "start_time", violations) is None
    assert violations.items == []
