"""WeChat keeps what it remembers in the follower's state: drop its old rows.

The channel used to claim every message in `processed_deliveries` (channel "wechat") and
keep unread pages in conversations of channel "wechat-pages"; both now live in the
follower's own conversation state (`handlers.wechat_store`).  The old rows are never read
again, and the pages may repeat what a follower typed, so they are deleted rather than left.
A retry in flight during the upgrade is answered again at worst: WeChat gives up on a
message within seconds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM processed_deliveries WHERE channel = 'wechat'")
    op.execute("DELETE FROM conversations WHERE channel = 'wechat-pages'")


def downgrade() -> None:
    """Nothing to restore: the older code starts with no claims and no unread pages."""
