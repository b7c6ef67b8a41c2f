"""The OpenAPI schema as a generator reads it (issue 16 §1).

Served as JSON at a documented URL; valid under a second, strict validator
(openapi-spec-validator); request and response bodies in separate components; blank and null
values declared; the fields auditors do not get optional in the answers, and every other field
sent. `.ci/generated_client.py` runs the whole documented flow with a client generated from it.
"""

import copy
import json
from typing import Any

import pytest
from django.test import Client
from openapi_schema_validator import OAS30ReadValidator
from openapi_spec_validator import OpenAPIV30SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from runs.api.serializers import RunSerializer, StepRunSerializer, StepSerializer
from runs.models import Run, RunError, RunStatus, StepRun, StepStatus
from swrly.web.schema import declare_blank_in_enums
from tenants.models import Role


@pytest.fixture(scope="module")
def served() -> bytes:
    """The schema as served (once per module: generating it takes a while)."""
    response = Client().get("/api/v1/schema.json")
    assert response.status_code == 200
    return response.content


@pytest.fixture
def schema(served) -> dict[str, Any]:
    return json.loads(served)


_BLANK = "#/components/schemas/BlankEnum"


def _component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return schema["components"]["schemas"][name]


def _refs(node: Any) -> set[str]:
    """The component names `node` refers to, directly."""
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(_refs(value) for key, value in node.items() if key != "$ref"))


def _closure(schema: dict[str, Any], names: set[str]) -> set[str]:
    """`names` and every component they refer to, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _refs(_component(schema, name))
    return seen


def _bodies(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The components reachable from request bodies, and from success response bodies."""
    requests: set[str] = set()
    responses: set[str] = set()
    for operations in schema["paths"].values():
        for operation in operations.values():
            requests |= _refs(operation.get("requestBody", {}))
            for status, response in operation.get("responses", {}).items():
                if status.startswith("2"):
                    responses |= _refs(response)
    return _closure(schema, requests), _closure(schema, responses)


def _is_enum(component: dict[str, Any]) -> bool:
    return "enum" in component


def _conforms(schema: dict[str, Any], name: str, instance: Any) -> None:
    """`instance` is valid as an answer against the component `name` (readOnly allowed)."""
    document = {"$ref": f"#/components/schemas/{name}", "components": schema["components"]}
    OAS30ReadValidator(document).validate(instance)


# --- Served as JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", "application/yaml", "text/html"])
def test_schema_json_is_json_whatever_the_accept_header(client, schema, accept):
    headers = {"Accept": accept} if accept else {}
    response = client.get("/api/v1/schema.json", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == schema


def test_the_schema_route_negotiates_yaml_or_json_and_needs_no_token(client, schema):
    yaml = client.get("/api/v1/schema/")
    assert yaml.status_code == 200
    assert yaml["Content-Type"].startswith("application/vnd.oai.openapi;")  # YAML
    assert yaml.content.startswith(b"openapi: 3.0")
    negotiated = client.get("/api/v1/schema/", headers={"Accept": "application/json"})
    assert negotiated["Content-Type"] == "application/json"
    assert json.loads(negotiated.content) == schema
    # no ?format= switch (docs/api.md): the parameter changes nothing
    ignored = client.get("/api/v1/schema/?format=json")
    assert ignored.status_code == 200
    assert ignored.content == yaml.content


# --- A second, strict validator ---------------------------------------------------------------


def test_a_strict_validator_accepts_the_schema(schema):
    assert schema["openapi"].startswith("3.0")
    validate(schema, cls=OpenAPIV30SpecValidator)


def test_the_validator_refuses_a_broken_schema(schema):
    # given the schema with one response component's `required` made a string
    broken = copy.deepcopy(schema)
    broken["components"]["schemas"]["Run"]["required"] = "id"
    # then the validator says so (it checks, not merely parses)
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV30SpecValidator)


# --- Requests and responses apart ---------------------------------------------------------------


def test_request_and_response_bodies_are_separate_components(schema):
    requests, responses = _bodies(schema)
    shared = {name for name in requests & responses if not _is_enum(_component(schema, name))}
    assert shared == set()
    for name in requests:
        for field, spec in _component(schema, name).get("properties", {}).items():
            assert not spec.get("readOnly"), f"{name}.{field} is read-only in a request"
    for name in responses:
        for field, spec in _component(schema, name).get("properties", {}).items():
            assert not spec.get("writeOnly"), f"{name}.{field} is write-only in a response"


def test_a_run_is_written_with_its_keys_and_read_without_them(schema):
    create = _component(schema, "RunCreateRequest")
    assert set(create["properties"]) == {"workflow", "input", "provider_keys"}
    assert sorted(create["required"]) == ["provider_keys", "workflow"]
    assert not create["properties"]["workflow"].get("nullable")  # a new run needs a workflow
    assert create["properties"]["input"]["type"] == "object"
    for name in ("Run", "RunList"):
        run = _component(schema, name)
        assert "provider_keys" not in run["properties"]
        assert run["properties"]["workflow"]["nullable"] is True  # its workflow was deleted
        assert "input" not in run["required"]  # auditors do not get it
        fingerprints = run["properties"]["key_fingerprints"]["additionalProperties"]
        assert _component(schema, fingerprints["$ref"].rsplit("/", 1)[1])["required"] == [
            "fingerprint",
            "hint",
        ]
    runs = schema["paths"]["/api/v1/runs/"]["post"]
    assert _refs(runs["requestBody"]) == {"RunCreateRequest"}
    assert _refs(runs["responses"]["202"]) == {"Run"}


def test_error_code_declares_the_blank_value_in_its_enum(schema):
    error_code = _component(schema, "Run")["properties"]["error_code"]
    assert "oneOf" not in error_code
    (name,) = _refs(error_code)
    enum = _component(schema, name)
    assert enum["enum"] == ["", *RunError.values]
    assert "BlankEnum" not in schema["components"]["schemas"]


def test_an_enum_used_with_and_without_its_blank_is_refused():
    # given an enum one field uses with "" and another without
    ref = {"$ref": "#/components/schemas/CodeEnum"}
    result = {
        "components": {
            "schemas": {
                "CodeEnum": {"type": "string", "enum": ["a", "b"]},
                "BlankEnum": {"enum": [""]},
                "One": {"properties": {"code": {"oneOf": [ref, {"$ref": _BLANK}]}}},
                "Other": {"properties": {"code": ref}},
            }
        }
    }
    # then "" cannot go into it: that would change the other field's meaning
    with pytest.raises(ValueError, match="CodeEnum"):
        declare_blank_in_enums(copy.deepcopy(result), generator=None)
    # and without the other field it goes in, and BlankEnum goes away
    del result["components"]["schemas"]["Other"]
    schemas = declare_blank_in_enums(result, generator=None)["components"]["schemas"]
    assert schemas["CodeEnum"]["enum"] == ["", "a", "b"]
    assert schemas["One"]["properties"]["code"] == {"allOf": [ref]}
    assert "BlankEnum" not in schemas


# --- Answers match their components, for every role -----------------------------------------


@pytest.fixture
def finished_runs(acme):
    """A run that succeeded (error_code ""), one that failed, and one whose workflow is gone."""
    succeeded = acme.run()
    Run.objects.filter(pk=succeeded.pk).update(status=RunStatus.SUCCEEDED)
    StepRun.objects.create(
        tenant=acme.tenant,
        run=succeeded,
        position=0,
        name="greet",
        provider="sandbox",
        model="sandbox-1",
        status=StepStatus.SUCCEEDED,
        provider_request_id="req_1",
        output_text="Hello.",
        input_tokens=3,
        output_tokens=2,
        attempts=1,
    )
    failed = acme.run()
    Run.objects.filter(pk=failed.pk).update(
        status=RunStatus.FAILED,
        error_code=RunError.PROVIDER_AUTH_FAILED,
        error_message="step greet: sandbox refused the key (HTTP 401)",
    )
    orphan = acme.run()
    Run.objects.filter(pk=orphan.pk).update(workflow=None)
    return [succeeded, failed, orphan]


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR])
def test_runs_answer_as_their_components_say(schema, acme, finished_runs, role):
    api = acme.api(role)
    run_fields = set(_component(schema, "Run")["properties"])
    step_fields = set(_component(schema, "StepRun")["properties"])
    if role == Role.AUDITOR:
        run_fields -= set(RunSerializer.fields_omitted_for_auditors)
        step_fields -= set(StepRunSerializer.fields_omitted_for_auditors)
    for run in finished_runs:
        body = api.get(f"/api/v1/runs/{run.pk}/").json()
        _conforms(schema, "Run", body)
        assert set(body) == run_fields
        for step in body["steps"]:
            assert set(step) == step_fields
    assert sum(len(api.get(f"/api/v1/runs/{r.pk}/").json()["steps"]) for r in finished_runs) == 1
    listed = api.get("/api/v1/runs/").json()
    _conforms(schema, "PaginatedRunListList", listed)
    assert {row["workflow"] for row in listed["results"]} == {str(acme.workflow().pk), None}
    assert {row["error_code"] for row in listed["results"]} == {"", "provider_auth_failed"}
    for row in listed["results"]:
        assert set(row) == run_fields - {"steps"}


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR])
def test_workflows_answer_as_their_components_say(schema, acme, role):
    workflow = acme.workflow()
    body = acme.api(role).get(f"/api/v1/workflows/{workflow.pk}/").json()
    _conforms(schema, "Workflow", body)
    assert set(body) == set(_component(schema, "Workflow")["properties"])
    step_fields = set(_component(schema, "Step")["properties"])
    if role == Role.AUDITOR:
        step_fields -= set(StepSerializer.fields_omitted_for_auditors)
    assert [set(step) for step in body["steps"]] == [step_fields]


def test_an_answer_missing_a_required_field_would_not_conform(schema, acme, finished_runs):
    # given a developer's answer without a field its component requires
    body = acme.api(Role.DEVELOPER).get(f"/api/v1/runs/{finished_runs[0].pk}/").json()
    del body["error_code"]
    # then the check used above refuses it
    with pytest.raises(Exception, match="error_code"):
        _conforms(schema, "Run", body)


def test_options_describes_what_a_run_request_sends(acme):
    response = acme.api(Role.DEVELOPER).options("/api/v1/runs/")
    assert response.status_code == 200
    post = response.json()["actions"]["POST"]
    assert set(post) == {"workflow", "input", "provider_keys"}
    assert not any(field["read_only"] for field in post.values())


# --- Every answer of a new tenant, as the schema says ---------------------------------------

_JSON = "application/json"


def _plain_get_paths(schema: dict[str, Any]) -> list[str]:
    """The GET routes without path parameters that answer JSON (the read side of a tenant)."""
    paths = []
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if "{" in path or get is None:
            continue
        if any(_JSON in response.get("content", {}) for response in get["responses"].values()):
            paths.append(path)
    return sorted(paths)


def _response_schema(schema: dict[str, Any], path: str, status: int) -> dict[str, Any]:
    responses = schema["paths"][path]["get"]["responses"]
    assert str(status) in responses, f"GET {path} answered an undocumented {status}"
    return responses[str(status)]["content"][_JSON]["schema"]


@pytest.mark.parametrize("role", [Role.OWNER, Role.DEVELOPER, Role.AUDITOR])
def test_every_read_of_a_new_tenant_answers_as_the_schema_says(schema, acme, role):
    # A new tenant is where defaults show: a policy never set, an empty list, a null date.
    api = acme.api(role)
    paths = _plain_get_paths(schema)
    assert "/api/v1/mfa-policy/" in paths
    assert "/api/v1/runs/" in paths
    for path in paths:
        response = api.get(path, HTTP_ACCEPT=_JSON)
        if response.get("Content-Type", "").split(";")[0] != _JSON:
            continue  # a schema document or an export: not a JSON answer
        document = {**_response_schema(schema, path, response.status_code)}
        document["components"] = schema["components"]
        OAS30ReadValidator(document).validate(response.json())


def _documents(schema: dict[str, Any], method: str, path: str, status: int) -> bool:
    return str(status) in schema["paths"][path][method]["responses"]


def test_a_delete_refused_by_the_objects_state_is_a_documented_answer(schema, acme):
    # given an invitation already revoked, and a tenant whose only owner is its owner
    api = acme.api(Role.OWNER)
    created = api.post(
        "/api/v1/invitations/",
        {"email": "twice@example.com", "role": "auditor"},
        "application/json",
    )
    invitation = f"/api/v1/invitations/{created.json()['id']}/"
    assert api.delete(invitation).status_code == 200
    owner = api.get("/api/v1/members/").json()["results"]
    (owner_id,) = [m["id"] for m in owner if m["role"] == Role.OWNER]
    # when each is deleted (again)
    refused = [api.delete(invitation), api.delete(f"/api/v1/members/{owner_id}/")]
    # then each is refused with a status its operation documents, in the error shape
    for path, response in zip(
        ["/api/v1/invitations/{id}/", "/api/v1/members/{id}/"], refused, strict=True
    ):
        assert response.status_code == 400, response.content
        assert _documents(schema, "delete", path, response.status_code)
        _conforms(schema, "Error", response.json())
