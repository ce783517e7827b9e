-- Admin API RBAC (Kong Enterprise's shape). Users and roles guard the
-- admin API; they are not proxy configuration, so they live outside the
-- versioned entity tables: changing them makes no config revision and
-- they never appear in /config exports.
CREATE TABLE rbac_users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- Hex SHA-256 of the token: tokens are never stored, and the digest
    -- doubles as the indexed lookup key.
    token_hash  TEXT NOT NULL UNIQUE,
    enabled     BIGINT NOT NULL DEFAULT 1,
    comment     TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE rbac_roles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    comment     TEXT,
    -- Gantry's team scope: a JSON array of tags, or NULL for none.
    tags        TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE rbac_user_roles (
    user_id TEXT NOT NULL REFERENCES rbac_users (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES rbac_roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE rbac_role_endpoints (
    role_id    TEXT NOT NULL REFERENCES rbac_roles (id) ON DELETE CASCADE,
    workspace  TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    actions    TEXT NOT NULL,            -- comma-separated: read,create,update,delete
    negative   BIGINT NOT NULL DEFAULT 0,
    comment    TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (role_id, workspace, endpoint)
);

CREATE TABLE rbac_role_entities (
    role_id     TEXT NOT NULL REFERENCES rbac_roles (id) ON DELETE CASCADE,
    entity_id   TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    actions     TEXT NOT NULL,
    negative    BIGINT NOT NULL DEFAULT 0,
    comment     TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (role_id, entity_id)
);

-- Kong's default roles.
INSERT INTO rbac_roles (id, name, comment, created_at) VALUES
  ('00000000-0000-4000-8000-000000000001', 'read-only', 'Read access to all endpoints, across all workspaces', 0),
  ('00000000-0000-4000-8000-000000000002', 'admin', 'Full access to all endpoints, across all workspaces, except RBAC Admin API', 0),
  ('00000000-0000-4000-8000-000000000003', 'super-admin', 'Full access to all endpoints, across all workspaces', 0);
INSERT INTO rbac_role_endpoints (role_id, workspace, endpoint, actions, negative, created_at) VALUES
  ('00000000-0000-4000-8000-000000000001', '*', '*', 'read', 0, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '*', 'read,create,update,delete', 0, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac/*', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac/*/*', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac/*/*/*', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac/*/*/*/*', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000002', '*', '/rbac/*/*/*/*/*', 'read,create,update,delete', 1, 0),
  ('00000000-0000-4000-8000-000000000003', '*', '*', 'read,create,update,delete', 0, 0);
