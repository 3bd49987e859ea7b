"""Check each entry's balance once at commit, not once per posting; and per statement.

The deferred balance check fired for every posting row, so committing a batch of 64 wallet
commands ran ~250 queries (a third of the batch's time, by `tokentill bench lifecycle`). It
now fires once per journal entry. That is only sound if an entry cannot gain postings the
check at commit would not see, so three rules come with it:
- an entry's txid is the id of the transaction that inserts it (no forged txid);
- postings go only into entries written by the current transaction;
- every INSERT of postings balances, per entry and asset, on its own (checked at the end of the
  statement, from its transition table). Without this, SET CONSTRAINTS ... IMMEDIATE could run
  an entry's check early and let later postings into it escape any check. An entry is written
  in one statement (ledger_post does), or in several that each balance.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Cached balances follow every posting, in one fixed order (no deadlocks): 0001's loop, unchanged.
APPLY_BALANCES = r"""
    FOR r IN
        SELECT account_id, stripe,
               sum(amount) FILTER (WHERE amount > 0) AS dr,
               -sum(amount) FILTER (WHERE amount < 0) AS cr
        FROM new_postings GROUP BY account_id, stripe ORDER BY account_id, stripe
    LOOP
        UPDATE account_balances
           SET debits = debits + coalesce(r.dr, 0), credits = credits + coalesce(r.cr, 0)
         WHERE account_id = r.account_id AND stripe = r.stripe;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'posting to account % has no balance stripe %', r.account_id, r.stripe
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
"""

UPGRADE = r"""
CREATE FUNCTION ledger_entry_txid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.txid IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'journal_entries.txid is set by the database, not by the writer'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER journal_entries_txid BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_txid();

-- Cached balances follow every posting, in one fixed order (no deadlocks), in the same
-- statement; and postings go only into entries of this transaction.
CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    entry bigint;
    bad text;
BEGIN
    FOR entry IN SELECT DISTINCT entry_id FROM new_postings LOOP  -- a primary-key probe each
        IF (SELECT j.txid FROM journal_entries j WHERE j.id = entry) <> pg_current_xact_id() THEN
            RAISE EXCEPTION 'entry % was written by an earlier transaction: its postings are final', entry
                USING ERRCODE = 'restrict_violation';
        END IF;
    END LOOP;
    SELECT n.entry_id, a.asset INTO entry, bad
      FROM new_postings n
      CROSS JOIN LATERAL (SELECT asset FROM accounts WHERE id = n.account_id) a  -- primary-key probes
     GROUP BY n.entry_id, a.asset
    HAVING sum(n.amount) <> 0
     LIMIT 1;
    IF entry IS NOT NULL AND bad IS NOT NULL THEN
        RAISE EXCEPTION 'these postings leave journal entry % unbalanced in %', entry, bad
            USING ERRCODE = 'check_violation';
    END IF;
{apply_balances}    RETURN NULL;
END $$;

-- Every entry has postings and balances per asset, checked at commit (so an entry may be
-- written in steps within its transaction), once per entry.
DROP TRIGGER postings_balanced ON postings;
DROP FUNCTION ledger_check_entry_balanced();
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs int;
    bad text;
BEGIN
    SELECT count(*), (array_agg(t.asset) FILTER (WHERE t.total <> 0))[1] INTO legs, bad
      FROM (SELECT a.asset, sum(p.amount) AS total
              FROM postings p JOIN accounts a ON a.id = p.account_id
             WHERE p.entry_id = NEW.id
             GROUP BY a.asset) t;
    IF legs = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', NEW.id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
"""

DOWNGRADE = r"""
DROP TRIGGER journal_entries_balanced ON journal_entries;
DROP FUNCTION ledger_check_entry_balanced();
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT a.asset INTO bad
      FROM postings p JOIN accounts a ON a.id = p.account_id
     WHERE p.entry_id = NEW.entry_id
     GROUP BY a.asset HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', NEW.entry_id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();

CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
{apply_balances}    RETURN NULL;
END $$;

DROP TRIGGER journal_entries_txid ON journal_entries;
DROP FUNCTION ledger_entry_txid();
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("{apply_balances}", APPLY_BALANCES.lstrip("\n")))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("{apply_balances}", APPLY_BALANCES.lstrip("\n")))
