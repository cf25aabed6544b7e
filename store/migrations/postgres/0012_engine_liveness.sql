-- Engines that announce they are alive (the saga driver does, every ENGINE_HEARTBEAT_EVERY). A lease
-- held by an engine whose announcement has lapsed is free at once, without waiting out the lease:
-- after a kill -9 the restarted server resumes the dead one's sagas within seconds, not 30.
-- Engines that never announce themselves (tests, tools) keep relying on their leases' expiry.
CREATE TABLE engines (
    owner        TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    alive_until  BIGINT NOT NULL
);

-- Sagas some engine holds: few at any time (the running ones), so a restarted server finds the
-- ones a dead engine left mid-flight without reading the backlog.
CREATE INDEX payouts_leased ON payouts (lease_owner) WHERE lease_owner IS NOT NULL;
