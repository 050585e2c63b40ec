"""The chaos suite's SendGrid and Twilio, in a process of its own so that the load generator and the checker cannot
starve it: it checks each request as the provider would, misbehaves as told, and records every message it accepted
(a receipt: an email by its delivery id, a text by its body, which Twilio's API has no room for an id beside),
including those accepted after the client gave up.

`python -m tests.chaos.provider --error-rate 0.3 ...` prints its base URL on the first line of stdout and serves
until its stdin closes. Besides SendGrid's `/v3/mail/send` it answers `GET /_chaos/receipts` and
`POST /_chaos/storm` (`{"on": true}`) for the test. `ProviderProcess` runs it from a test.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request
from tests.integration.delivery.fake_sendgrid import FakeSendGrid
from tests.integration.delivery.fake_twilio import FakeTwilio, twilio_reply

API_KEY = "SG.chaos-key"
TWILIO_SID = "AC" + "c" * 32
TWILIO_TOKEN = "chaos-twilio-token"


@dataclass(frozen=True)
class Misbehaviour:
    """How the provider misbehaves: a share of 503s, and a share of slow answers that end in acceptance after the
    client gave up (a way a provider can receive a message twice). 429 storms are switched on by the test."""

    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 2.0


class ChaosProvider:
    """SendGrid's mail/send with misbehaviour and receipts, on a FakeHttpServer."""

    def __init__(self, http: FakeHttpServer, misbehaviour: Misbehaviour, *, seed: int = 1) -> None:
        self.sendgrid = FakeSendGrid(http, api_key=API_KEY)
        self.misbehaviour = misbehaviour
        self.storm = threading.Event()
        self.receipts: collections.Counter[str] = collections.Counter()
        self.twilio = FakeTwilio(http, account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
        self.sms_receipts: collections.Counter[str] = collections.Counter()
        self.slow_accepts = 0
        self._chance = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
        self._lock = threading.Lock()
        http.route("/v3/mail/send", self._mail_send)
        http.route(self.twilio.path, self._create_message)
        http.route("/_chaos/receipts", self._receipts)
        http.route("/_chaos/storm", self._storm)

    def _mail_send(self, request: Request) -> Reply:
        try:
            request.json()
        except ValueError:
            # A worker SIGKILLed while sending leaves half a body; SendGrid refuses it, and nobody hears the answer.
            return Reply(400, {"errors": [{"message": "Bad Request"}]})
        with self._lock:
            roll = self._chance.random()
        if self.storm.is_set():
            return Reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "1"})
        if roll < self.misbehaviour.error_rate:
            return Reply(503, {"errors": [{"message": "service unavailable"}]})
        reply = self.sendgrid._mail_send(request)
        if reply.status == 202:
            slow = roll < self.misbehaviour.error_rate + self.misbehaviour.slow_rate
            if slow:
                time.sleep(self.misbehaviour.slow_s)  # past the client's timeout: it gives up, we accept anyway
            with self._lock:
                self.receipts[request.json()["custom_args"]["delivery_id"]] += 1
                self.slow_accepts += slow
        return reply

    def _create_message(self, request: Request) -> Reply:
        with self._lock:
            roll = self._chance.random()
        if self.storm.is_set():
            return twilio_reply(429, 20429, "Too Many Requests", {"Retry-After": "1"})
        if roll < self.misbehaviour.error_rate:
            return twilio_reply(503, 20500, "Service unavailable")
        reply = self.twilio._create_message(request)
        if reply.status == 201:
            slow = roll < self.misbehaviour.error_rate + self.misbehaviour.slow_rate
            if slow:
                time.sleep(self.misbehaviour.slow_s)
            with self._lock:
                self.sms_receipts[reply.body["body"]] += 1
                self.slow_accepts += slow
        return reply

    def _receipts(self, _request: Request) -> Reply:
        with self._lock:
            return Reply(
                200,
                {
                    "receipts": dict(self.receipts),
                    "sms_receipts": dict(self.sms_receipts),
                    "slow_accepts": self.slow_accepts,
                },
            )

    def _storm(self, request: Request) -> Reply:
        if request.json().get("on"):
            self.storm.set()
        else:
            self.storm.clear()
        return Reply(200, {})


class ProviderProcess:
    """The provider as a child process: `host` for CLARION_SENDGRID_HOST, `receipts()`, `storm(on)`, `stop()`."""

    def __init__(self, misbehaviour: Misbehaviour | None = None) -> None:
        misbehaviour = misbehaviour or Misbehaviour()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.chaos.provider",
                f"--error-rate={misbehaviour.error_rate}",
                f"--slow-rate={misbehaviour.slow_rate}",
                f"--slow-s={misbehaviour.slow_s}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.host = self._process.stdout.readline().strip()
        if not self.host.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the chaos provider did not start: {self.host!r}")

    def _call(self, path: str, body: object = None) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if data is None else "POST"
        request = urllib.request.Request(f"{self.host}{path}", data=data, method=method)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own loopback URL
            answer: dict[str, object] = json.loads(response.read())
            return answer

    def receipts(self) -> collections.Counter[str]:
        """Every delivery id the provider accepted, with how many times."""
        receipts = self._call("/_chaos/receipts")["receipts"]
        assert isinstance(receipts, dict)
        return collections.Counter({str(k): int(v) for k, v in receipts.items()})

    def sms_receipts(self) -> collections.Counter[str]:
        """Every text body the provider accepted, with how many times."""
        receipts = self._call("/_chaos/receipts")["sms_receipts"]
        assert isinstance(receipts, dict)
        return collections.Counter({str(k): int(v) for k, v in receipts.items()})

    def slow_accepts(self) -> int:
        return int(str(self._call("/_chaos/receipts")["slow_accepts"]))

    def storm(self, on: bool) -> None:
        """Answer every request with 429 and Retry-After: 1 while on."""
        self._call("/_chaos/storm", {"on": on})

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--slow-s", type=float, default=2.0)
    args = parser.parse_args()
    with FakeHttpServer() as http:
        ChaosProvider(http, Misbehaviour(args.error_rate, args.slow_rate, args.slow_s))
        sys.stdout.write(http.url + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
