"""Push without FCM: what Clarion does when no FCM credentials are set (local mode, and the seed's behaviour).

Nothing leaves the process. The push is logged (never its token) and counts as sent, marked simulated, so local
mode runs the whole flow end to end.
"""

from __future__ import annotations

from clarion.core.logging import get_logger
from clarion.delivery.providers.base import PushMessage

log = get_logger(__name__)


class SimulatedPushProvider:
    """Logs each push and answers "simulated-<delivery_id>"."""

    name = "simulated"
    simulated = True

    async def send(self, message: PushMessage) -> str:
        """Log the push; it always succeeds."""
        log.info(
            "push_simulated",
            delivery_id=message.delivery_id,
            device_id=message.device_id,
            platform=message.platform,
        )
        return f"simulated-{message.delivery_id}"

    async def close(self) -> None:
        """Nothing to release."""
