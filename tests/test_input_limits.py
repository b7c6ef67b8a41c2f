"""Bad input is a 400, never a 500: NUL characters, unpaired surrogates, non-finite numbers and
deep nesting are refused at the door, naming the field, before any key is deposited.

The API cases are generated from the OpenAPI schema: every write operation with a body, every
string in a valid body for it (keys of free-form objects included), every query parameter of
every list. A new write route without a valid body here fails the suite. On PostgreSQL (CI's
second pass) these inputs used to answer 500; on SQLite they were stored.
"""

import base64
import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from runs.models import Run, Workflow
from runs.services import workflow_delete
from swrly.audit.models import AuditEvent, AuditWebhook
from swrly.audit.writer import Actor
from swrly.identity.models import Invitation, TenantMfaPolicy
from swrly.input_limits import MAX_JSON_DEPTH
from tenants.models import ApiToken, Membership, Role

KEY_PATTERN = "swrly:byok:v1:*"
NUL = "\x00"


@pytest.fixture(autouse=True)
def _sandbox_enabled(settings):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}


@pytest.fixture(scope="module")
def openapi() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema: dict, methods: set[str]) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method.upper() in methods
    ]


SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
WRITES = [
    (method, path)
    for method, path, operation in _operations(SCHEMA, {"POST", "PUT", "PATCH"})
    if "requestBody" in operation
]
LISTS = [
    (path, [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"])
    for _, path, operation in _operations(SCHEMA, {"GET"})
    if "{" not in path and "/schema/" not in path
]


def _steps() -> list[dict]:
    return [
        {
            "name": "greet",
            "provider": "sandbox",
            "model": "sandbox-1",
            "system": "Be brief.",
            "prompt": "Hello {{ input.topic }}",
        }
    ]


# (method, path) -> a valid body. Every string of it (and every key inside a field's value) is
# replaced by one with a NUL in turn; the valid body itself must be accepted. WORKFLOW stands
# for the id of a workflow of the tenant.
WORKFLOW = "<workflow>"
BODIES = {
    ("POST", "/api/v1/tokens/"): {"name": "ci", "role": "developer"},
    ("POST", "/api/v1/audit-webhooks/"): {"url": "https://siem.example/ingest?source=swrly"},
    ("POST", "/api/v1/members/"): {"email": "new@acme.example", "role": "developer"},
    ("PATCH", "/api/v1/members/{id}/"): {"role": "auditor"},
    ("POST", "/api/v1/invitations/"): {"email": "invited@acme.example", "role": "developer"},
    ("PATCH", "/api/v1/mfa-policy/"): {"required_roles": ["owner"]},
    ("POST", "/api/v1/workflows/"): {
        "name": "report",
        "description": "A report.",
        "steps": _steps(),
    },
    ("PATCH", "/api/v1/workflows/{id}/"): {
        "name": "renamed",
        "description": "Renamed.",
        "steps": _steps(),
    },
    ("POST", "/api/v1/blocked-keys/"): {
        "provider": "sandbox",
        "fingerprint": "v2:" + "ab" * 32,
        "reason": "leaked",
    },
    ("POST", "/api/v1/blocked-keys/from-key/"): {
        "provider": "sandbox",
        "key": "sk-leaked-0123456789",
        "reason": "leaked",
    },
    ("PATCH", "/api/v1/policy/"): {
        "allowed_providers": ["sandbox"],
        "allowed_models": {"sandbox": ["sandbox-1", "sandbox-2*"]},
        "max_key_ttl": 600,
        "retention_days": 30,
    },
    ("POST", "/api/v1/runs/"): {
        "workflow": WORKFLOW,
        "input": {"topic": "keys", "notes": {"tags": ["a", "b"]}},
        "provider_keys": {"sandbox": "sk-sandbox-0123456789"},
    },
}
# The object a `{id}` route acts on, by collection.
OBJECTS = {
    "members": lambda acme: Membership.objects.get(user=acme.users[Role.DEVELOPER]).pk,
    "workflows": lambda acme: acme.workflow().pk,
}


def _workflow(acme: Any) -> Workflow:
    return Workflow.objects.create(
        tenant=acme.tenant, name="nul", steps=_steps(), created_by="system:tests"
    )


def _prepare(acme: Any, path: str, body: Any) -> tuple[str, str]:
    """The URL and the JSON text for `body` (a value, or raw JSON text), with the objects they
    name created first."""
    if "{id}" in path:
        path = path.replace("{id}", str(OBJECTS[path.split("/")[3]](acme)))
    text = body if isinstance(body, str) else json.dumps(body)
    if WORKFLOW in text:
        text = text.replace(WORKFLOW, str(_workflow(acme).pk))
    return path, text


def _send(acme: Any, method: str, url: str, text: str) -> Any:
    send = getattr(acme.api(Role.OWNER), method.lower())
    return send(url, text, content_type="application/json")


def _request(acme: Any, method: str, path: str, body: Any) -> Any:
    """`body` sent to the route as the owner."""
    return _send(acme, method, *_prepare(acme, path, body))


def _strings(value: Any, path: str = "") -> list[tuple[tuple, str, bool]]:
    """(location, printed path, is_key) of every string, and of every key inside a field's
    value, in `value`."""
    found = []
    if isinstance(value, str):
        found.append(((), path, False))
    elif isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            if path:
                found.append(((key,), child_path, True))
            found += [((key, *loc), p, k) for loc, p, k in _strings(child, child_path)]
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += [((index, *loc), p, k) for loc, p, k in _strings(child, f"{path}[{index}]")]
    return found


def _with_nul(body: Any, location: tuple, is_key: bool) -> tuple[Any, str]:
    """A copy of `body` with a NUL in the string (or key) at `location`, and the path the API
    should name for it."""
    body = json.loads(json.dumps(body))
    parent = body
    for step in location[:-1]:
        parent = parent[step]
    last = location[-1]
    if is_key:
        parent[f"{last[:2]}{NUL}{last[2:]}"] = parent.pop(last)
        location = (*location[:-1], f"{last[:2]}\\u0000{last[2:]}")
    else:
        parent[last] = f"{parent[last][:2]}{NUL}{parent[last][2:]}"
    printed = ""
    for part in location:
        printed += f"[{part}]" if isinstance(part, int) else (f".{part}" if printed else part)
    return body, printed


def _nothing_deposited(key_store: Any, acme: Any) -> None:
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    assert not AuditEvent.objects.filter(tenant=acme.tenant, action="key.deposited").exists()
    assert not Run.objects.filter(tenant=acme.tenant).exists()


def _state(acme: Any) -> tuple:
    workflows = Workflow.objects.filter(tenant=acme.tenant)
    return (
        sorted((str(w.pk), w.name, w.description, json.dumps(w.steps)) for w in workflows),
        sorted(Membership.objects.filter(tenant=acme.tenant).values_list("pk", "role")),
        ApiToken.objects.filter(tenant=acme.tenant).count(),
        AuditWebhook.objects.filter(tenant=acme.tenant).count(),
        Invitation.objects.filter(tenant=acme.tenant).count(),
        list(TenantMfaPolicy.objects.filter(tenant=acme.tenant).values_list("required_roles")),
    )


def test_every_write_route_has_a_valid_body_covering_its_fields():
    assert sorted(BODIES) == sorted(WRITES), "give the new write route a valid body here"
    for method, path in WRITES:
        content = SCHEMA["paths"][path][method.lower()]["requestBody"]["content"]
        name = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        component = SCHEMA["components"]["schemas"][name]
        writable = {n for n, p in component["properties"].items() if not p.get("readOnly")}
        missing = writable - set(BODIES[(method, path)])
        assert not missing, f"{method} {path}: the body does not cover {sorted(missing)}"


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_the_valid_body_of_every_write_route_is_accepted(method, path, acme, key_store):
    response = _request(acme, method, path, BODIES[(method, path)])
    assert response.status_code in (200, 201, 202), response.content


NUL_CASES = [
    pytest.param(method, path, location, is_key, id=f"{method} {path} {printed}{' key' * is_key}")
    for method, path in WRITES
    for location, printed, is_key in _strings(BODIES[(method, path)])
]


@pytest.mark.parametrize(("method", "path", "location", "is_key"), NUL_CASES)
def test_a_nul_in_any_string_of_any_write_is_a_400_naming_it(
    method, path, location, is_key, acme, key_store
):
    # given
    body, named = _with_nul(BODIES[(method, path)], location, is_key)
    url, text = _prepare(acme, path, body)
    before = _state(acme)
    # when
    response = _send(acme, method, url, text)
    # then
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [named]
    assert "NUL" in error["fields"][named][0]
    _nothing_deposited(key_store, acme)
    assert _state(acme) == before


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_nesting_beyond_the_limit_is_a_400_on_every_write_route(method, path, acme, key_store):
    for body in ("[" * 1000 + "]" * 1000, '{"a":' * 5000 + "1" + "}" * 5000):
        response = _request(acme, method, path, body)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "nesting_too_deep"
    _nothing_deposited(key_store, acme)


def _nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = {"x": value}
    return value


def test_a_run_input_may_nest_up_to_the_limit_and_not_one_level_more(acme, key_store):
    body = BODIES[("POST", "/api/v1/runs/")]
    # the body's own object is the first level, `input` the second
    deepest = {**body, "input": {"topic": "t", **_nested(MAX_JSON_DEPTH - 1)}}
    too_deep = {**body, "input": {"topic": "t", **_nested(MAX_JSON_DEPTH)}}
    refused = _request(acme, "POST", "/api/v1/runs/", too_deep)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "nesting_too_deep"
    _nothing_deposited(key_store, acme)
    accepted = _request(acme, "POST", "/api/v1/runs/", deepest)
    assert accepted.status_code == 202, accepted.content


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"\\ud800 lone surrogate"', "description"),
        ('"\\udfff"', "description"),
    ],
)
def test_an_unpaired_surrogate_is_a_400_naming_the_field(raw, field, acme):
    body = f'{{"name": "report", "description": {raw}, "steps": {json.dumps(_steps())}}}'
    response = acme.api(Role.OWNER).post("/api/v1/workflows/", body, "application/json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    assert not Workflow.objects.filter(tenant=acme.tenant).exists()


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_a_number_no_column_can_hold_is_a_400(number, acme, key_store):
    raw = json.dumps(BODIES[("POST", "/api/v1/runs/")]).replace('"keys"', number)
    response = _request(acme, "POST", "/api/v1/runs/", raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    _nothing_deposited(key_store, acme)


@pytest.mark.parametrize(("path", "parameters"), LISTS)
def test_a_nul_in_any_query_parameter_of_a_list_is_a_400_naming_it(path, parameters, acme):
    api = acme.api(Role.OWNER)
    for name in [*parameters, "unknown"]:
        response = api.get(path, {name: f"x{NUL}y"})
        assert response.status_code == 400, (name, response.content)
        fields = response.json()["error"]["fields"]
        assert list(fields) == [name]
        assert "NUL" in fields[name][0]
    response = api.get(f"{path}?a%00b=1")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["a\\u0000b"]


@pytest.mark.parametrize(
    "position", ["p=%00", "p=2026-13-40T00:00:00Z", "p=not-a-date", "o=0&r=0&p=\x00"]
)
@pytest.mark.parametrize("path", [path for path, parameters in LISTS if "cursor" in parameters])
def test_a_cursor_whose_position_is_not_a_date_time_is_a_400(path, position, acme):
    cursor = base64.b64encode(position.encode()).decode()
    response = acme.api(Role.OWNER).get(path, {"cursor": cursor})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["cursor"]


@pytest.mark.parametrize("path", ["runs", "workflows", "members", "tokens"])
def test_a_nul_in_an_object_id_is_a_404_like_any_unknown_id(path, acme):
    response = acme.api(Role.OWNER).get(f"/api/v1/{path}/ab%00cd/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


PAGES = ["runs:dashboard", "tenants:audit-list", "tenants:member-list", "tenants:apitoken-list"]
PAGES += ["custody:key-history", "tenants:audit-export-csv", "runs:run-list"]


@pytest.mark.parametrize("name", PAGES)
def test_a_nul_in_a_page_query_string_is_a_400(name, acme):
    url = reverse(name, kwargs={"tenant_slug": acme.tenant.slug})
    client = acme.client(Role.OWNER)
    for query in ("q=%00", "actor=a%00b", "status=%00", "before=%00", "%00=1"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400, (query, response.status_code)


def test_a_nul_in_the_sign_in_form_is_a_400_and_writes_nothing(acme):
    events = AuditEvent.objects.count()
    for data in (
        {"username": f"owner@acme.example{NUL}", "password": "wrong"},
        {"username": "owner@acme.example", "password": f"pass{NUL}word"},
    ):
        response = Client().post("/accounts/login/", data)
        assert response.status_code == 400
        assert b"username" in response.content or b"password" in response.content
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("identity:member-add", {"email": f"a{NUL}@acme.example", "role": "developer"}),
        ("identity:member-add", {"email": "a@acme.example", "role": f"developer{NUL}"}),
        ("tenants:apitoken-list", {"name": f"ci{NUL}", "role": "developer"}),
    ],
)
def test_a_nul_in_a_page_form_is_a_400_and_changes_nothing(name, data, acme):
    before = _state(acme)
    url = reverse(name, kwargs={"tenant_slug": acme.tenant.slug})
    response = acme.client(Role.OWNER).post(url, data)
    assert response.status_code == 400
    assert _state(acme) == before


def test_a_nul_in_the_password_change_form_is_a_400(acme):
    response = acme.client(Role.OWNER).post(
        "/accounts/password/",
        {"old_password": "x", "new_password1": f"a{NUL}b", "new_password2": f"a{NUL}b"},
    )
    assert response.status_code == 400


def test_a_nul_in_the_user_agent_is_not_stored(acme):
    response = acme.api(Role.OWNER).post(
        "/api/v1/tokens/",
        {"name": "ci", "role": "developer"},
        content_type="application/json",
        headers={"User-Agent": f"probe{NUL}agent"},
    )
    assert response.status_code == 201
    event = AuditEvent.objects.filter(tenant=acme.tenant, action="token.created").latest("seq")
    assert event.user_agent == "probeagent"


# The OpenAPI schema as JSON Schema: 3.0's `nullable` becomes a null alternative.
def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {
        key: value.replace("#/components/schemas/", "#/$defs/")
        if key == "$ref"
        else _json_schema(value)
        for key, value in node.items()
        if key != "nullable"
    }
    if "properties" in node and "required" in node:  # write-only fields are never answered
        write_only = {name for name, p in node["properties"].items() if p.get("writeOnly")}
        converted["required"] = [name for name in node["required"] if name not in write_only]
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _response_validator(schema: dict, path: str) -> Any:
    from jsonschema import Draft202012Validator

    response = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    components = _json_schema(schema["components"]["schemas"])
    root = {**_json_schema(response["schema"]), "$defs": components}
    return Draft202012Validator(root)


def test_the_runs_list_and_detail_match_the_schema_for_a_deleted_workflow_and_no_error(
    acme, openapi
):
    # given: a queued run (no error: error_code "") and a run whose workflow was deleted
    queued = acme.run()
    gone = Workflow.objects.create(
        tenant=acme.tenant, name="gone", steps=_steps(), created_by="system:tests"
    )
    orphan = Run.objects.create(
        tenant=acme.tenant,
        workflow=gone,
        workflow_name=gone.name,
        steps=gone.steps,
        triggered_by="system:tests",
        status="failed",
        error_code="provider_error",
        error_message="the provider answered 500",
    )
    workflow_delete(workflow=gone, actor=Actor.system("tests"))
    api = acme.api(Role.OWNER)
    # when
    listed = api.get("/api/v1/runs/").json()
    one = api.get(f"/api/v1/runs/{orphan.pk}/").json()
    # then
    by_id = {run["id"]: run for run in listed["results"]}
    assert by_id[str(orphan.pk)]["workflow"] is None
    assert by_id[str(queued.pk)]["error_code"] == ""
    list_errors = list(_response_validator(openapi, "/api/v1/runs/").iter_errors(listed))
    assert list_errors == []
    detail_errors = list(_response_validator(openapi, "/api/v1/runs/{id}/").iter_errors(one))
    assert detail_errors == []
    # and a response that breaks the schema would be caught
    broken = {**listed, "results": [{**listed["results"][0], "error_code": "made_up"}]}
    assert list(_response_validator(openapi, "/api/v1/runs/").iter_errors(broken))


def test_a_run_cannot_be_created_with_a_null_workflow(acme, key_store):
    response = acme.api(Role.OWNER).post(
        "/api/v1/runs/",
        {"workflow": None, "provider_keys": {"sandbox": "sk-sandbox-0123456789"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["workflow"]
    _nothing_deposited(key_store, acme)
