"""Deduplication of channel deliveries and the shared credential cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "processed_deliveries",
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("delivery_key", sa.String(128), primary_key=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_processed_deliveries_created_at", "processed_deliveries",
                    ["created_at"])
    op.create_table(
        "shared_secret_cache",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shared_secret_cache")
    op.drop_index("ix_processed_deliveries_created_at", "processed_deliveries")
    op.drop_table("processed_deliveries")
