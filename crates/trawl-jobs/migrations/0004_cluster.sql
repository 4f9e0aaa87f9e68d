-- trawl-jobs, schema version 4: leadership leases for singleton duties,
-- and cluster events on LISTEN/NOTIFY.

-- One lease per duty (`trawl_jobs::leader`): held by `holder` until
-- `expires_at`, renewed by its holder, taken by another node once expired.
-- `acquired_at` changes only when the holder does.
CREATE TABLE trawl_jobs.leaders (
    name text PRIMARY KEY,
    holder text NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Sends a cluster event (`trawl_jobs::ClusterEvent` as JSON) on the channel
-- `trawl_jobs_events`, at the commit of the calling transaction. A payload
-- must stay under 8000 bytes, or pg_notify fails and with it the statement
-- that finishes a job: string fields longer than `keep` characters are cut
-- to `keep` plus '…', halving `keep` until the payload fits. Returns
-- whether the event was sent (always, for the events of this crate).
CREATE FUNCTION trawl_jobs.publish_event(event jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    payload text := event::text;
    keep integer := 2000;
    field text;
BEGIN
    WHILE octet_length(payload) >= 8000 AND keep >= 0 LOOP
        FOR field IN
            SELECT e.key FROM jsonb_each(event) AS e
            WHERE jsonb_typeof(e.value) = 'string' AND length(e.value #>> '{}') > keep
        LOOP
            event := jsonb_set(event, ARRAY[field], to_jsonb(left(event ->> field, keep) || '…'));
        END LOOP;
        payload := event::text;
        keep := CASE WHEN keep = 0 THEN -1 ELSE keep / 2 END;
    END LOOP;
    IF octet_length(payload) >= 8000 THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('trawl_jobs_events', payload);
    RETURN true;
END
$$;

-- Every job that reaches the dead letters announces itself
-- (`ClusterEvent::JobDead`), whichever statement put it there: a worker's
-- outcome, a reconciler tick, a suspension that timed out.
CREATE FUNCTION trawl_jobs.job_dead() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trawl_jobs.publish_event(jsonb_build_object(
        'event', 'job_dead',
        'job_id', NEW.id,
        'kind', NEW.kind,
        'queue', NEW.queue,
        'error', NEW.last_error));
    RETURN NULL;
END
$$;

CREATE TRIGGER job_dead AFTER INSERT ON trawl_jobs.jobs_finished
    FOR EACH ROW WHEN (NEW.state = 'dead')
    EXECUTE FUNCTION trawl_jobs.job_dead();
