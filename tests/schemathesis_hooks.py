"""Schemathesis hooks for the admin API's contract test (tests/schemathesis.toml).

positive_data_acceptance fails a run when a request the OpenAPI document
calls valid is refused. A few refusals depend on what no schema can know,
and the document says so in the descriptions of the fields concerned
(docs/admin-api.md lists them). This hook drops a positive_data_acceptance
failure only when the admin API's own error names one of those reasons and
nothing else:

- a reference to an entity that does not exist (a route's `service`, a
  credential's `consumer`...): Kong's 400 foreign key violation, code 4,
  blaming reference fields only. References are checked after the whole
  body passed its schema, so such an answer also says everything else in
  the body was accepted;
- a PEM document that does not parse, a CA certificate that is expired or
  no CA (code 2, blaming only the PEM fields or, on ca_certificates, the
  entity);
- an RE2 expression that does not compile (a route's `~/` path or `~*`
  header value: code 2, only `paths` or `headers`, an "invalid regex");
- a plugin's config failing its plugin's cross-field checks (code 2,
  blaming only `config` or `@entity`, on a plugin operation);
- a declarative document whose entities do not check out (code 14, on
  POST /config and /config/validate);
- a PATCH, which is checked against its merge with the stored entity: a
  record-level check (code 2, blaming only `@entity` or fields that take
  part in one) can fail there whatever the body says;
- a PUT naming a new entity by id (a UUID) rather than by its endpoint
  key: the body must then carry the key, which a schema cannot tie to the
  URL (code 2, blaming only the endpoint key as missing, or for consumers
  the "at least one of" check).

Any other refusal of a schema-valid request still fails the run.
"""

import json
import os
import re

import schemathesis

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Every field of an entity that references another one (entities/defs.rs,
# the `foreign` lists).
REFERENCE_FIELDS = {
    "service",
    "route",
    "consumer",
    "upstream",
    "certificate",
    "client_certificate",
    "ca_certificates",
}

PEM_FIELDS = {"cert", "key", "cert_alt", "key_alt", "rsa_public_key"}

# Fields that take part in an entity's record-level checks (defs.rs).
CROSS_FIELDS = {
    "services": {"protocol", "path", "url", "host"},
    "routes": {"protocols", "snis", "methods", "hosts", "paths", "headers"},
    "upstreams": {
        "hash_on",
        "hash_fallback",
        "hash_on_header",
        "hash_fallback_header",
        "hash_on_cookie",
        "hash_on_query_arg",
        "hash_fallback_query_arg",
        "hash_on_uri_capture",
        "hash_fallback_uri_capture",
    },
    "jwt": {"algorithm", "rsa_public_key"},
    "certificates": {"cert_alt", "key_alt"},
    "consumers": {"username", "custom_id"},
    "plugins": {"config", "consumer", "protocols"},
}

# The endpoint key of each collection that has one (defs.rs).
ENDPOINT_KEYS = {
    "services": "name",
    "routes": "name",
    "upstreams": "name",
    "targets": "target",
    "consumers": "username",
    "key-auth": "key",
    "jwt": "key",
    "plugins": "instance_name",
    "snis": "name",
}


def collection(case):
    """The collection an operation writes: the last literal segment."""
    parts = [p for p in case.operation.path.split("/") if p and not p.startswith("{")]
    return parts[-1] if parts else ""


def messages(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from messages(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from messages(v)


def explained(case, body):
    reason = _explained(case, body)
    log = os.environ.get("GANTRY_SCHEMATHESIS_DROPPED")
    if log and reason:
        with open(log, "a") as f:
            f.write(f"{reason}\t{case.method} {case.operation.path}\n")
    return reason is not None


def _explained(case, body):
    code = body.get("code")
    fields = body.get("fields")
    method = case.method.upper()
    coll = collection(case)
    if method == "POST" and case.operation.path in ("/config", "/config/validate"):
        # Any 400: the document's entities are described one by one, not
        # how they must fit together (or even parse, for YAML in `config`).
        return "declarative"
    if case.operation.path == "/rbac/users/{user}/roles" and str(
        body.get("message", "")
    ).startswith("role not found with name"):
        # Roles are named by the body; which exist is state.
        return "reference"
    if not isinstance(fields, dict) or not fields:
        return None
    blamed = set(fields)
    if code == 4:
        return "reference" if blamed <= REFERENCE_FIELDS else None
    if code != 2:
        return None
    texts = list(messages(fields))
    if blamed <= PEM_FIELDS or (coll == "ca_certificates" and blamed <= {"cert", "@entity"}):
        return "pem" if coll in ("certificates", "ca_certificates", "jwt") else None
    if blamed <= {"paths", "headers"} and all("invalid regex" in t for t in texts):
        return "regex" if coll == "routes" else None
    if coll == "plugins" and blamed <= {"config", "@entity"}:
        return "plugin config"
    if method == "PATCH" and blamed <= {"@entity"} | CROSS_FIELDS.get(coll, set()):
        return "patch merge"
    if method == "PUT" and UUID.match(str((case.path_parameters or {}).get("id", ""))):
        key = ENDPOINT_KEYS.get(coll)
        if key and fields == {key: "required field missing"}:
            return "put by id"
        if coll == "consumers" and blamed == {"@entity"} and all("at least one of" in t for t in texts):
            return "put by id"
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202" or response.status_code != 400:
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    if not isinstance(body, dict):
        return True
    # Keep the failure unless the refusal is one the document explains.
    return not explained(case, body)
