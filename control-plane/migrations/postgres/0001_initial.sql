-- The head row serialises writers: every write transaction begins by
-- bumping it, so revisions are strictly increasing and gapless.
CREATE TABLE config_head (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    rev BIGINT NOT NULL
);
INSERT INTO config_head (id, rev) VALUES (1, 0);

CREATE TABLE revisions (
    rev        BIGINT PRIMARY KEY,
    created_at BIGINT NOT NULL,          -- unix milliseconds
    actor      TEXT NOT NULL,
    operation  TEXT NOT NULL,
    summary    TEXT NOT NULL
);
INSERT INTO revisions (rev, created_at, actor, operation, summary)
VALUES (0, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT, 'system', 'init', 'empty configuration');

-- Every version of every entity; the current one has rev_to NULL.
-- The state at revision n is rev_from <= n AND (rev_to IS NULL OR rev_to > n).
CREATE TABLE entity_versions (
    seq      BIGSERIAL PRIMARY KEY,
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    data     TEXT NOT NULL,
    rev_from BIGINT NOT NULL,
    rev_to   BIGINT
);
CREATE UNIQUE INDEX entity_versions_current ON entity_versions (kind, id) WHERE rev_to IS NULL;
CREATE INDEX entity_versions_rev_from ON entity_versions (rev_from);
CREATE INDEX entity_versions_rev_to ON entity_versions (rev_to);

-- Unique keys of current entities (name, username, cache keys...).
CREATE TABLE entity_keys (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    id   TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX entity_keys_id ON entity_keys (kind, id);

-- Foreign references of current entities.
CREATE TABLE entity_refs (
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    ref_kind TEXT NOT NULL,
    ref_id   TEXT NOT NULL
);
CREATE INDEX entity_refs_target ON entity_refs (ref_kind, ref_id);
CREATE INDEX entity_refs_source ON entity_refs (kind, id);

CREATE TABLE entity_tags (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    tag  TEXT NOT NULL
);
CREATE INDEX entity_tags_tag ON entity_tags (tag, kind, id);
CREATE INDEX entity_tags_entity ON entity_tags (kind, id);

CREATE TABLE audit (
    seq       BIGSERIAL PRIMARY KEY,
    rev       BIGINT NOT NULL,
    at        BIGINT NOT NULL,           -- unix milliseconds
    actor     TEXT NOT NULL,
    operation TEXT NOT NULL,
    kind      TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    before    TEXT,                      -- secrets redacted before storing
    after     TEXT
);
CREATE INDEX audit_rev ON audit (rev);

-- Key that seals secrets in exported documents; one per database, so
-- every control-plane replica on it can read what another exported.
CREATE TABLE seal_keys (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    key TEXT NOT NULL
);
