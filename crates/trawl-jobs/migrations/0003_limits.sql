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
-- Listing by state no longer needs an index entry for every pending and
-- running job (one more index update per claim): pending jobs, most of the
-- hot table, are listed through the primary key, running ones through the
-- partial indexes of running jobs; the rarer states keep an index.
DROP INDEX trawl_jobs.jobs_state_id;
CREATE INDEX jobs_waiting_state_id ON trawl_jobs.jobs (state, id)
    WHERE state IN ('blocked', 'suspended');

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

-- Whether job `p_id` of concurrency key `p_key` may start: fewer than the
-- key's cap (1 if unset) of live jobs with the key have a lower id.
CREATE FUNCTION trawl_jobs.concurrency_turn(p_key text, p_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (
        SELECT count(*) FROM (
            SELECT 1 FROM trawl_jobs.jobs o
            WHERE o.concurrency_key = p_key AND o.id < p_id
            LIMIT 100000
        ) older
    ) < COALESCE((
        SELECT k.max_running FROM trawl_jobs.concurrency_keys k WHERE k.key = p_key
    ), 1)
$$;

-- The start of the window `now` falls in, for a budget whose window started
-- at `window_start` (windows follow each other without gaps).
CREATE FUNCTION trawl_jobs.budget_window(window_start timestamptz, window_ms bigint,
    now timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN window_start + window_ms * interval '1 millisecond' <= now
        THEN window_start + floor(extract(epoch FROM now - window_start) * 1000 / window_ms)
            * window_ms * interval '1 millisecond'
        ELSE window_start END
$$;

-- A claim under limits, in one round trip: lock the queue's settings row
-- (if it has a cap) and count its running jobs with a fresh snapshot (so
-- that concurrent claims count each other's jobs), lock the budgets that
-- apply and read the room left in their windows, claim what fits (by
-- priority, run_at, id; the running sums of cost within the rooms), and
-- charge the budgets. Claims of queues without limits use a plain
-- statement instead.
CREATE FUNCTION trawl_jobs.claim_limited(p_queue text, p_max integer, p_worker text,
    p_lease_ms bigint, p_now timestamptz, p_timeout_ms bigint, p_skip text[], p_only text)
RETURNS TABLE (id bigint, kind text, queue text, priority smallint, payload jsonb,
    run_at timestamptz, attempt integer, max_attempts integer, timeout_ms bigint,
    lease_expires_at timestamptz, cost integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := COALESCE(p_now, now());
    v_max integer := p_max;
    v_cap integer;
    v_running bigint;
    v_queue_room bigint;
    v_kinds text[] := '{}';
    v_rooms bigint[] := '{}';
    v_skip text[] := COALESCE(p_skip, '{}');
    b record;
BEGIN
    SELECT q.max_running INTO v_cap FROM trawl_jobs.queues q
    WHERE q.name = p_queue AND q.max_running IS NOT NULL
    FOR UPDATE;
    IF v_cap IS NOT NULL THEN
        SELECT count(*) INTO v_running FROM trawl_jobs.jobs j
        WHERE j.queue = p_queue AND j.state = 'running';
        v_max := least(v_max, greatest(v_cap - v_running, 0));
    END IF;
    FOR b IN
        SELECT g.scope, g.target, g.max_cost - CASE
            WHEN trawl_jobs.budget_window(g.window_start, g.window_ms, v_now) = g.window_start
            THEN g.used ELSE 0 END AS room
        FROM trawl_jobs.budgets g
        WHERE (g.scope = 'queue' AND g.target = p_queue) OR g.scope = 'kind'
        ORDER BY g.scope, g.target
        FOR UPDATE
    LOOP
        IF b.scope = 'queue' THEN
            v_queue_room := b.room;
        ELSE
            v_kinds := v_kinds || b.target;
            v_rooms := v_rooms || b.room;
            IF b.room <= 0 THEN
                v_skip := v_skip || b.target;
            END IF;
        END IF;
    END LOOP;
    IF v_max <= 0 OR v_queue_room <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH next AS (
        SELECT j.id, j.kind, j.cost, j.priority, j.run_at FROM trawl_jobs.jobs j
        WHERE j.state = 'pending' AND j.queue = p_queue AND j.run_at <= v_now
            AND j.kind <> ALL(v_skip) AND (p_only IS NULL OR j.kind = p_only)
            AND (j.concurrency_key IS NULL
                OR trawl_jobs.concurrency_turn(j.concurrency_key, j.id))
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT v_max
        FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT n.id, n.kind,
            sum(n.cost) OVER (ORDER BY n.priority DESC, n.run_at, n.id) AS total,
            sum(n.cost) OVER (PARTITION BY n.kind ORDER BY n.priority DESC, n.run_at, n.id)
                AS per_kind
        FROM next n
    ), chosen AS (
        SELECT r.id FROM ranked r
        LEFT JOIN unnest(v_kinds, v_rooms) AS k(kind, room) ON k.kind = r.kind
        WHERE (v_queue_room IS NULL OR r.total <= v_queue_room)
            AND (k.room IS NULL OR r.per_kind <= k.room)
    ), claimed AS (
        UPDATE trawl_jobs.jobs j SET
            state = 'running',
            attempt = j.attempt + 1,
            lease_owner = p_worker,
            lease_expires_at = v_now + p_lease_ms * interval '1 millisecond',
            attempted_at = v_now,
            deadline_at = v_now + COALESCE(j.timeout_ms, p_timeout_ms) * interval '1 millisecond'
        FROM chosen WHERE j.id = chosen.id
        RETURNING j.id, j.kind, j.queue, j.priority, j.payload, j.run_at, j.attempt,
            j.max_attempts, COALESCE(j.timeout_ms, p_timeout_ms), j.lease_expires_at, j.cost
    ), charges AS (
        SELECT 'kind' AS scope, c.kind AS target, sum(c.cost) AS cost FROM claimed c
        WHERE c.kind = ANY(v_kinds) GROUP BY c.kind
        UNION ALL
        SELECT 'queue', p_queue, sum(c.cost) FROM claimed c
        HAVING v_queue_room IS NOT NULL AND count(*) > 0
    ), charged AS (
        UPDATE trawl_jobs.budgets g SET
            used = CASE
                WHEN trawl_jobs.budget_window(g.window_start, g.window_ms, v_now) = g.window_start
                THEN g.used ELSE 0 END + ch.cost,
            window_start = trawl_jobs.budget_window(g.window_start, g.window_ms, v_now)
        FROM charges ch WHERE g.scope = ch.scope AND g.target = ch.target
    )
    SELECT * FROM claimed;
END
$$;
