-- Treasury settings changed at run time (fees, limits, routing weights, FX spreads, kill switches).
-- One row per setting, the newest value; written in the same transaction as the change's audit
-- entry. `railyard serve` lays these over the configuration file when it starts.
CREATE TABLE treasury_settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    changed_at  BIGINT NOT NULL,
    changed_by  TEXT NOT NULL
);
