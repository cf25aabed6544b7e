-- What each rail has been given to send per UTC day and currency (minor units): the liquidity
-- reserved for its legs, less what definitive rejects released. The saga reserves a leg only if
-- the day's total stays within the rail's daily cap, in the same transaction (usage.rs).
CREATE TABLE rail_usage (
    rail      TEXT NOT NULL,
    currency  TEXT NOT NULL,
    -- Days since 1970-01-01, UTC.
    day       BIGINT NOT NULL,
    used      BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (rail, currency, day)
);
