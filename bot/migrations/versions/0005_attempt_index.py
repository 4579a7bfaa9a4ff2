"""Index delivery attempts by channel and time (the WeCom rate check reads them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_notification_attempts_channel_at", "notification_attempts",
                    ["queue_channel_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_notification_attempts_channel_at", "notification_attempts")
