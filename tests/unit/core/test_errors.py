import grpc
from google.rpc import code_pb2, error_details_pb2

from clarion.core.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, internal_status, to_status
from tests.helpers import status_detail


def test_not_found_carries_error_info_and_request_id() -> None:
    status = to_status(
        NotFound("user u1 not found", reason="USER_NOT_FOUND", metadata={"user_id": "u1"}), request_id="r-1"
    )
    assert status.code == code_pb2.NOT_FOUND
    assert status.message == "user u1 not found"
    info = status_detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == ("USER_NOT_FOUND", "clarion.dev", {"user_id": "u1"})
    assert status_detail(status, error_details_pb2.RequestInfo).request_id == "r-1"


def test_invalid_argument_names_the_field() -> None:
    status = to_status(InvalidArgument.for_field("user.email_address", "not an email address"), request_id="r")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "user.email_address: not an email address"
    violation = status_detail(status, error_details_pb2.BadRequest).field_violations[0]
    assert (violation.field, violation.description) == ("user.email_address", "not an email address")


def test_resource_exhausted_says_when_to_retry() -> None:
    status = to_status(ResourceExhausted("quota used up", retry_after_s=1.5), request_id="r")
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status_detail(status, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 1500


def test_internal_status_hides_everything_but_the_request_id() -> None:
    status = internal_status(request_id="r-9")
    assert status.code == code_pb2.INTERNAL
    assert "r-9" in status.message
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "INTERNAL"


def test_a_status_echoing_huge_input_stays_small_enough_for_the_trailers() -> None:
    huge = "x" * 50_000
    error = InvalidArgument(
        f"notification {huge!r} not found",
        violations=[FieldViolation(f"message_data.{huge}", huge) for _ in range(500)],
        metadata={"notification_id": huge},
    )

    status = to_status(error, request_id="r")

    assert len(status.SerializeToString()) < 8 * 1024 // 2, "base64 in grpc-status-details-bin must fit in 8 KiB"
    assert status.message.startswith("notification 'xxx")
    assert status.message.endswith("…")
    assert len(status_detail(status, error_details_pb2.BadRequest).field_violations) == 10
