"""Problems: each incident's group_id (the first incident of its problem), and the outbox's
``grouped`` notifications (a later incident of a problem already paged).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "kind IN ('opened', 'acknowledged', 'resolved')"
_NEW_KINDS = "kind IN ('opened', 'grouped', 'acknowledged', 'resolved')"


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("group_id", sa.String(), nullable=True))
        batch.create_index(batch.f("ix_incidents_group_id"), ["group_id"])
    with op.batch_alter_table("notifications") as batch:  # SQLite rebuilds the table for the check
        batch.drop_constraint(batch.f("ck_notifications_kind"), type_="check")
        batch.create_check_constraint(batch.f("ck_notifications_kind"), _NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE kind = 'grouped'")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint(batch.f("ck_notifications_kind"), type_="check")
        batch.create_check_constraint(batch.f("ck_notifications_kind"), _OLD_KINDS)
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index(batch.f("ix_incidents_group_id"))
        batch.drop_column("group_id")
