"""Projects: an API key belongs to one, and so do notifications and idempotency keys (dead letters and scheduled
sends through their notifications). What existed moves to the project `default`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.execute("INSERT INTO projects (id, name) VALUES ('default', 'Default project')")
    # A constant default: PostgreSQL adds such a column without rewriting the table.
    op.add_column("api_keys", sa.Column("project_id", sa.String(63), nullable=False, server_default="default"))
    op.create_foreign_key("fk_api_keys_project_id_projects", "api_keys", "projects", ["project_id"], ["id"])
    op.add_column("notifications", sa.Column("project_id", sa.String(63), nullable=False, server_default="default"))
    op.create_index("ix_notifications_project_created", "notifications", ["project_id", "created_at", "id"])
    # Idempotency keys are unique per project: another project's holder of the same key is someone else's request.
    op.add_column("idempotency_keys", sa.Column("project_id", sa.String(63), nullable=False, server_default="default"))
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["project_id", "key"])


def downgrade() -> None:
    # Keys live a day: those of other projects are dropped rather than merged into one namespace.
    op.execute("DELETE FROM idempotency_keys WHERE project_id <> 'default'")
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["key"])
    op.drop_column("idempotency_keys", "project_id")
    op.drop_index("ix_notifications_project_created", table_name="notifications")
    op.drop_column("notifications", "project_id")
    op.drop_constraint("fk_api_keys_project_id_projects", "api_keys", type_="foreignkey")
    op.drop_column("api_keys", "project_id")
    op.drop_table("projects")
