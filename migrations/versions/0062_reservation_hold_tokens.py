"""A reservation keeps the tokens its hold counts: `hold_prompt_tokens` and `hold_output_tokens`.

A token budget made while a hold was open counted that hold only once it settled (a money budget
counted it at once): what the hold counted in tokens was kept only in the budget rows of the token
budgets there were then, so a 1,000-token hold open under a new 1,500-token hard day let a 600-token
hold through. The reservation now keeps the prompt tokens its hold priced (the context window held
for a continued conversation, as a token budget counts it) and the output tokens it allowed, and a
token budget made later counts what is left of them. NULL: a hold of an amount alone (no tokens), or
one taken before this (those still count once they settle).

The columns come without a scan: every row there is has NULL in them, so their CHECKs are added NOT
VALID (each new or changed row is checked all the same). A CHECK in ADD COLUMN scanned every
partition of `reservations` under an ACCESS EXCLUSIVE lock, reserves and settles waiting (0.15 s a
million rows, twice).

Revision ID: 0062
Revises: 0061
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0062"
down_revision = "0061"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE reservations ADD COLUMN hold_prompt_tokens bigint, ADD COLUMN hold_output_tokens bigint;
ALTER TABLE reservations ADD CONSTRAINT reservations_hold_prompt_tokens_check CHECK (hold_prompt_tokens >= 0) NOT VALID;
ALTER TABLE reservations ADD CONSTRAINT reservations_hold_output_tokens_check CHECK (hold_output_tokens >= 0) NOT VALID;
""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE reservations DROP COLUMN hold_output_tokens;
ALTER TABLE reservations DROP COLUMN hold_prompt_tokens;
""")
