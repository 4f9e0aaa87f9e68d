-- trawl-jobs, schema version 3: limits. A queue's fleet-wide cap on
-- running jobs and its depth limit for producers; caps per concurrency
-- key; budgets (N starts, or N units of cost, per window) per queue or job
-- kind.

-- What a job's start costs against budgets (1 unless the job says).
ALTER TABLE trawl_jobs.jobs ADD COLUMN cost integer NOT NULL DEFAULT 1 CHECK (cost >= 0);
ALTER TABLE trawl_jobs.jobs_finished ADD COLUMN cost integer NOT NULL DEFAULT 1;

-- Settings of a queue; a queue without a row has no limits.
CREATE TABLE trawl_jobs.queues (
    name text PRIMARY KEY,
    -- Jobs of the queue running at once across every worker.
    max_running integer CHECK (max_running > 0),
    -- Pending jobs beyond which an enqueue waits or fails.
    max_depth bigint CHECK (max_depth > 0),
    -- 'wait' (at most max_wait_ms) or 'fail' (QueueFull at once).
    on_full text NOT NULL DEFAULT 'wait' CHECK (on_full IN ('wait', 'fail')),
    max_wait_ms bigint NOT NULL DEFAULT 30000 CHECK (max_wait_ms >= 0)
);
-- A capped queue's claim counts its running jobs.
CREATE INDEX jobs_running_queue ON trawl_jobs.jobs (queue) WHERE state = 'running';

-- The cap of each concurrency key: jobs that carry the key run at most
-- this many at once, in id order (a job of the key that waits, for a retry
-- or a signal, keeps its turn).
CREATE TABLE trawl_jobs.concurrency_keys (
    key text PRIMARY KEY,
    max_running integer NOT NULL CHECK (max_running > 0)
);
CREATE INDEX jobs_concurrency_key ON trawl_jobs.jobs (concurrency_key, id)
    WHERE concurrency_key IS NOT NULL;

-- Budgets: at most max_cost of job cost started per window, for a queue
-- or a job kind. `partition` (of budget_partitions) is for budget_reset.
CREATE TABLE trawl_jobs.budgets (
    scope text NOT NULL CHECK (scope IN ('queue', 'kind')),
    target text NOT NULL,
    partition smallint NOT NULL,
    max_cost bigint NOT NULL CHECK (max_cost > 0),
    window_ms bigint NOT NULL CHECK (window_ms > 0),
    window_start timestamptz NOT NULL DEFAULT now(),
    used bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, target)
);
CREATE INDEX budgets_window ON trawl_jobs.budgets (partition, window_start);
