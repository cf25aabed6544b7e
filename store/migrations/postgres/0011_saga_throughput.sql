-- One row, bumped by `Store::sync`: a durable commit of it makes every earlier commit durable too
-- (saga steps commit without their own flush and are made durable together before any rail call,
-- webhook or answer depends on them).
CREATE TABLE durability_marks (
    id    BIGINT PRIMARY KEY,
    mark  BIGINT NOT NULL
);
INSERT INTO durability_marks (id, mark) VALUES (1, 0);

-- The saga driver's scan for due sagas reads only the ones still moving; payouts_due cannot serve
-- `state NOT IN (...)`, so without this every scan read every payout ever made.
CREATE INDEX payouts_moving ON payouts (next_action_at) WHERE state NOT IN ('completed', 'failed', 'cancelled', 'returned');
