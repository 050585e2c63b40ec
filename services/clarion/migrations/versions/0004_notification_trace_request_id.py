"""The x-request-id each notification was accepted under, for tracing it through the workers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:13:00.287225
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "notifications", sa.Column("trace_request_id", sa.String(length=128), server_default="", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("notifications", "trace_request_id")
