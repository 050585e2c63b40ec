"""GetDeliveryStats over REST through the real Envoy: `GET /v1/deliveries:stats` with the window and filters in
the query string gives the figures computed from the rows; a bad filter is a 400 naming the field."""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import RestClient
from tests.integration.notifications.test_delivery_stats import NOW, WINDOW_START, Row, expected, rows

pytestmark = pytest.mark.integration
__all__ = ["rows"]  # the fixture, shared with the gRPC tests


async def test_rest_gives_the_same_figures_through_envoy(rest: RestClient, rows: list[Row]) -> None:
    start, end = WINDOW_START.strftime("%Y-%m-%dT%H:%M:%SZ"), NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    response = await rest.get(f"/v1/deliveries:stats?start_time={start}&end_time={end}&channel=CHANNEL_EMAIL")

    assert response.status == 200, response.body
    body = response.json()
    email = [r for r in rows if r.channel == "email"]
    want = expected(email)
    assert int(body["totals"]["total"]) == want["total"]
    assert int(body["totals"]["sent"]) == want["sent"]
    assert body["totals"]["success_rate"] == pytest.approx(want["success_rate"], abs=1e-6)
    assert float(body["totals"]["time_to_send_p50"].rstrip("s")) == pytest.approx(want["p50"], abs=1e-3)
    assert [g["provider"] for g in body["providers"]] == sorted({r.provider for r in email if r.provider})

    bad = await rest.get("/v1/deliveries:stats?provider=NOPE%20NOPE")
    assert bad.status == 400
    details = {d["@type"].rsplit(".", 1)[1]: d for d in bad.json()["details"]}
    assert [v["field"] for v in details["BadRequest"]["field_violations"]] == ["provider"]
