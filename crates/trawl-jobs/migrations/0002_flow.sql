-- trawl-jobs, schema version 2: dependencies, cancel propagation, unique
-- jobs and suspension.

-- Whether a job has children (edges from it): the finish trigger looks at
-- the edges of such jobs only.
ALTER TABLE trawl_jobs.jobs ADD COLUMN has_children boolean NOT NULL DEFAULT false;
ALTER TABLE trawl_jobs.jobs_finished ADD COLUMN has_children boolean NOT NULL DEFAULT false;
-- When the dependency tick last checked a blocked job (it walks the
-- least recently checked first).
ALTER TABLE trawl_jobs.jobs ADD COLUMN deps_checked_at timestamptz;

-- One row per dependency: the child runs once every parent succeeded.
CREATE TABLE trawl_jobs.job_edges (
    parent_id bigint NOT NULL,
    child_id bigint NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX job_edges_child ON trawl_jobs.job_edges (child_id, parent_id);

-- The dependency tick: blocked jobs of a partition, least recently checked
-- first.
CREATE INDEX jobs_blocked_checked ON trawl_jobs.jobs
    (partition, deps_checked_at NULLS FIRST, id)
    WHERE state = 'blocked';

-- Parents that ended dead or cancelled while children of theirs still live:
-- edge_cancel_dispatcher cancels the children in batches, then drops the
-- row. `partition` is the parent's.
CREATE TABLE trawl_jobs.cancel_propagation (
    parent_id bigint PRIMARY KEY,
    partition smallint NOT NULL,
    reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cancel_propagation_partition ON trawl_jobs.cancel_propagation
    (partition, parent_id);

-- edge_cancel_reconciler: recently finished dead or cancelled parents.
CREATE INDEX jobs_finished_dead_parents ON trawl_jobs.jobs_finished
    (partition, finished_at)
    WHERE has_children AND state IN ('dead', 'cancelled');

-- Unique keys: a key held by a job while it lives (expires_at NULL), or
-- until expires_at whatever happens to the job.
CREATE TABLE trawl_jobs.unique_keys (
    unique_key text PRIMARY KEY,
    job_id bigint NOT NULL,
    expires_at timestamptz
);

-- Suspension: signals find their jobs, suspension_timeout walks deadlines.
CREATE INDEX jobs_suspended_signal ON trawl_jobs.jobs (signal_key)
    WHERE state = 'suspended';
CREATE INDEX jobs_suspended_until ON trawl_jobs.jobs (partition, suspended_until)
    WHERE state = 'suspended';

-- What a job's end does to others, in the transaction that ends it: a
-- while-live unique key is freed; the children of a job that succeeded lose
-- one pending parent (and become pending with the last one); a job that
-- ended dead or cancelled queues the cancellation of its children.
CREATE FUNCTION trawl_jobs.job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    woken bigint;
BEGIN
    IF NEW.unique_key IS NOT NULL THEN
        DELETE FROM trawl_jobs.unique_keys
        WHERE unique_key = NEW.unique_key AND job_id = NEW.id AND expires_at IS NULL;
    END IF;
    IF NEW.has_children THEN
        IF NEW.state = 'succeeded' THEN
            WITH promoted AS (
                UPDATE trawl_jobs.jobs c SET
                    pending_parents = greatest(c.pending_parents - 1, 0),
                    state = CASE WHEN c.pending_parents <= 1
                        THEN 'pending'::trawl_jobs.job_state ELSE c.state END
                FROM trawl_jobs.job_edges e
                WHERE e.parent_id = NEW.id AND c.id = e.child_id AND c.state = 'blocked'
                RETURNING c.queue, c.state
            )
            SELECT count(*) INTO woken FROM (
                SELECT pg_notify('trawl_jobs_enqueued', queue)
                FROM (SELECT DISTINCT queue FROM promoted WHERE state = 'pending') q
            ) n;
        ELSE
            INSERT INTO trawl_jobs.cancel_propagation (parent_id, partition, reason)
            VALUES (NEW.id, NEW.partition, format('parent %s was %s', NEW.id, NEW.state))
            ON CONFLICT (parent_id) DO NOTHING;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_finished AFTER INSERT ON trawl_jobs.jobs_finished
    FOR EACH ROW WHEN (NEW.unique_key IS NOT NULL OR NEW.has_children)
    EXECUTE FUNCTION trawl_jobs.job_finished();
