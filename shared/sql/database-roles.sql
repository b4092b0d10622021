-- catalyst-dr's database roles on the Catalyst Auth database (docs/database-roles.md).
--
-- Run once per database, as its owner or an administrator, e.g.
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f shared/sql/database-roles.sql
-- It is idempotent: running it again changes nothing. The roles are created NOLOGIN and without
-- a password; the operator then gives each one its password (never kept in this repository):
--   ALTER ROLE "catalyst_dr_replay" LOGIN PASSWORD '...';
-- Role names are always written double-quoted so other names can be substituted
-- (catalyst_db::roles::setup_sql does that for the tests).

-- Roles are cluster-wide: tolerate one that exists, also when two sessions create it at once.
DO $$ BEGIN CREATE ROLE "catalyst_dr_backup" NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE "catalyst_dr_replay" NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE "catalyst_dr_drill" NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;

DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO "catalyst_dr_backup", "catalyst_dr_replay", "catalyst_dr_drill"', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO "catalyst_dr_backup", "catalyst_dr_replay", "catalyst_dr_drill";

-- Logical backup (snapshot-trigger): reads every table and sequence. pg_export_snapshot needs no
-- privilege; LOCK ... IN ACCESS SHARE MODE needs only SELECT, which pg_read_all_data gives.
GRANT pg_read_all_data TO "catalyst_dr_backup";
ALTER ROLE "catalyst_dr_backup" SET default_transaction_read_only = on;

-- The replay journal, owned by the administrator running this (the replay cannot create it).
-- Same definition as the replay's own JOURNAL_DDL in shared/src/catalyst_db/deliveries.rs.
CREATE SCHEMA IF NOT EXISTS catalyst_dr;
CREATE TABLE IF NOT EXISTS catalyst_dr.replay_journal (
    replay_id text NOT NULL,
    delivery_id bigint NOT NULL,
    requeued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replay_id, delivery_id)
);

-- Dead-letter replay (dead-letter-replay): reads what its queries name, requeues, journals.
-- Column privileges keep payloads and subscription secrets out of its reach.
GRANT SELECT (id, subscription_id, status, next_attempt_at, updated_at) ON public.webhook_deliveries TO "catalyst_dr_replay";
GRANT UPDATE (status, next_attempt_at, updated_at) ON public.webhook_deliveries TO "catalyst_dr_replay";
GRANT SELECT (id, endpoint_url) ON public.webhook_subscriptions TO "catalyst_dr_replay";
GRANT USAGE ON SCHEMA catalyst_dr TO "catalyst_dr_replay";
GRANT SELECT, INSERT ON catalyst_dr.replay_journal TO "catalyst_dr_replay";

-- Drill validation (drill-validator): reads the four tables for the baseline fingerprint.
GRANT SELECT ON public.users, public.entitlements, public.webhook_subscriptions, public.webhook_deliveries TO "catalyst_dr_drill";
-- The baseline holds SHARE locks for about a second to fix its instant; LOCK in SHARE MODE needs
-- UPDATE, DELETE or TRUNCATE on the table, so the lock is taken by this function (owned by the
-- administrator) instead of granting the drill role any write privilege.
CREATE OR REPLACE FUNCTION catalyst_dr.lock_baseline_tables() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    LOCK TABLE public.users, public.entitlements, public.webhook_subscriptions, public.webhook_deliveries IN SHARE MODE;
END $$;
REVOKE ALL ON FUNCTION catalyst_dr.lock_baseline_tables() FROM PUBLIC;
GRANT USAGE ON SCHEMA catalyst_dr TO "catalyst_dr_drill";
GRANT EXECUTE ON FUNCTION catalyst_dr.lock_baseline_tables() TO "catalyst_dr_drill";
