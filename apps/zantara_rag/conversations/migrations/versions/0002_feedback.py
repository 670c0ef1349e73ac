"""Feedback on a turn (one rating each), and turns indexed by time for retention and the gaps report.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column(
            "turn_id",
            sa.Integer,
            sa.ForeignKey("turns.id", ondelete="CASCADE", name="fk_feedback_turn_id"),
            primary_key=True,
        ),
        sa.Column("rating", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rating IN (1, -1)", name="ck_feedback_rating"),
    )
    op.create_index("ix_turns_asked_at", "turns", ["asked_at"])


def downgrade() -> None:
    op.drop_index("ix_turns_asked_at", table_name="turns")
    op.drop_table("feedback")
