-- API keys created and revoked at run time (issue 11). Keys written in the configuration file stay
-- there; revoking one records a row here with origin 'config', so the revocation outlives restarts.
-- Only the SHA-256 of a secret is kept: the secret itself is shown once, when the key is created.
CREATE TABLE api_keys (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    origin      TEXT NOT NULL CHECK (origin IN ('api', 'config')),
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT,
    revoked_by  TEXT,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX api_keys_sha256 ON api_keys (sha256);
