"""The W3C traceparent each notification was accepted under, so the dispatcher and the workers continue its trace.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("trace_parent", sa.String(length=64), server_default="", nullable=False))


def downgrade() -> None:
    op.drop_column("notifications", "trace_parent")
