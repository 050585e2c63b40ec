"""Provider events: what providers report about messages they accepted (SendGrid's Event Webhook), each kept once.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(32), nullable=False),
        # The provider's own id of the event (SendGrid's sg_event_id): a batch posted again changes nothing.
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("delivery_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # Whether it changed a delivery or suppressed an address when it arrived.
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "event_id", name="pk_provider_events"),
    )
    op.create_index("ix_provider_events_delivery", "provider_events", ["delivery_id", "occurred_at"])
    # The events kept but not applied because their delivery was not SENT yet (the worker had not committed): the
    # sweeper applies them again for a while (clarion.provider_events.apply.apply_pending).
    op.create_index(
        "ix_provider_events_pending",
        "provider_events",
        ["received_at"],
        postgresql_where=sa.text(
            "NOT applied AND delivery_id IS NOT NULL AND event IN ('delivered', 'bounce', 'blocked', 'dropped')"
        ),
    )


def downgrade() -> None:
    op.drop_table("provider_events")
