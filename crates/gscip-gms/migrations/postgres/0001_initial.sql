-- gmsd schema, PostgreSQL flavour (keep in step with ../sqlite/0001_initial.sql).
CREATE TABLE meta (id BIGINT PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL);
INSERT INTO meta (id, revision) VALUES (1, 0);
CREATE TABLE secrets (name TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE TABLE groups (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created BIGINT NOT NULL);
CREATE TABLE ges (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    public_key TEXT,
    client_cert_hash TEXT UNIQUE,
    created BIGINT NOT NULL,
    enrolled BIGINT
);
CREATE TABLE memberships (
    ge TEXT NOT NULL REFERENCES ges (name) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (ge, group_id)
);
CREATE TABLE group_keys (
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT,
    reason TEXT NOT NULL,
    PRIMARY KEY (group_id, version)
);
CREATE TABLE enrollment_tokens (token_hash TEXT PRIMARY KEY, ge TEXT NOT NULL REFERENCES ges (name) ON DELETE CASCADE, expires BIGINT NOT NULL, used BIGINT);
CREATE TABLE nat_aces (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gnat TEXT NOT NULL REFERENCES ges (name) ON DELETE CASCADE,
    group_id BIGINT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    inside_address TEXT NOT NULL,
    protocol TEXT NOT NULL,
    port BIGINT NOT NULL
);
CREATE TABLE admins (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE admin_tokens (token_hash TEXT PRIMARY KEY, admin TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE, created BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE TABLE rotation_slots (slot BIGINT PRIMARY KEY, done BIGINT NOT NULL);
