"""The role matrix in docs/api.md, checked cell by cell against the API.

The table is the contract; this test is generated from it. It also fails when the URLconf has
an API route or method the table does not list.
"""

import re
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from runs.models import Run
from swrly.custody.models import BlockedKey
from tenants.models import Membership, Role

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
ROLES = [Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.AUDITOR]


def _matrix():
    text = DOC.read_text()
    block = text.split("<!-- role-matrix:start -->")[1].split("<!-- role-matrix:end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        route, method, *outcomes = cells
        rows.append((route.strip("`"), method, dict(zip(ROLES, outcomes, strict=True))))
    return rows


MATRIX = _matrix()
CELLS = [
    (route, method, role, expected)
    for route, method, row in MATRIX
    for role, expected in row.items()
]


def _api_routes():
    """(route with {id}, methods) for every /api/v1/ view in the URLconf."""
    found = {}

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                if not route.startswith("api/v1/"):
                    continue
                route = "/" + re.sub(r"\^|\$|\\\.\(\?P<format>[^)]*\)\/?", "", route)
                route = re.sub(r"\(\?P<\w+>[^)]*\)|<[^>]+>", "{id}", route)
                if "format" in route:  # DRF's format-suffix twins of the routes
                    continue
                callback = pattern.callback
                actions = getattr(callback, "actions", None)
                if actions:
                    allowed = {m.upper() for m in callback.cls.http_method_names}
                    methods = {m.upper() for m in actions} & allowed
                else:
                    view = callback.view_class
                    methods = {m.upper() for m in view.http_method_names if hasattr(view, m)}
                methods -= {"HEAD", "OPTIONS"}
                found.setdefault(route, set()).update(methods)

    walk(get_resolver().url_patterns, "")
    return found


def test_the_matrix_lists_every_api_route_and_method():
    documented = {}
    for route, method, _ in MATRIX:
        documented.setdefault(route, set()).add(method)
    assert documented == _api_routes()


def _target(world, route):
    """A real object of the world's tenant for a route with {id}, fresh for every cell."""
    if "{id}" not in route:
        return route
    if route.startswith("/api/v1/tokens/"):
        obj = world.token(Role.AUDITOR)
    elif route.startswith("/api/v1/members/"):
        obj = Membership.objects.get(user=world.users[Role.AUDITOR])
    elif route.startswith("/api/v1/workflows/"):
        obj = world.workflow()
    elif route.startswith("/api/v1/runs/"):
        obj = world.run()
    elif route.startswith("/api/v1/invitations/"):
        from tests.identity.conftest import invite

        obj = invite(world, "matrix-invitee@elsewhere.example")
    elif route.startswith("/api/v1/audit-webhooks/"):
        obj = world.audit_webhook()
    elif route.startswith("/api/v1/blocked-keys/"):
        obj = BlockedKey.objects.create(
            tenant=world.tenant, provider="sandbox", fingerprint="v2:" + "d" * 64, created_by="t"
        )
    else:
        raise AssertionError(f"no object for {route}")
    return route.replace("{id}", str(obj.pk))


BODIES = {
    ("/api/v1/tokens/", "POST"): {"name": "matrix", "role": "auditor"},
    ("/api/v1/members/", "POST"): {"email": "matrix@acme.example", "role": "auditor"},
    ("/api/v1/members/{id}/", "PATCH"): {"role": "developer"},
    ("/api/v1/invitations/", "POST"): {"email": "matrix@elsewhere.example", "role": "auditor"},
    ("/api/v1/mfa-policy/", "PATCH"): {"required_roles": ["owner"]},
    ("/api/v1/workflows/", "POST"): {
        "name": "matrix",
        "steps": [{"name": "a", "provider": "sandbox", "model": "m", "prompt": "hi"}],
    },
    ("/api/v1/workflows/{id}/", "PATCH"): {"description": "matrix"},
    ("/api/v1/audit-webhooks/", "POST"): {"url": "https://siem.example/ingest"},
    ("/api/v1/blocked-keys/", "POST"): {"provider": "sandbox", "fingerprint": "v2:" + "e" * 64},
    ("/api/v1/blocked-keys/from-key/", "POST"): {"provider": "sandbox", "key": "sk-matrix-0002"},
    ("/api/v1/runs/", "POST"): {"workflow": None, "provider_keys": {"sandbox": "sk-matrix-0001"}},
    ("/api/v1/policy/", "PATCH"): {"retention_days": 30},
}


@pytest.mark.parametrize(
    ("route", "method", "role", "expected"),
    CELLS,
    ids=[f"{m} {r} {role}" for r, m, role, _ in CELLS],
)
def test_each_cell_of_the_role_matrix(acme, route, method, role, expected, key_store, settings):
    path = _target(acme, route)
    body = BODIES.get((route, method))
    if route == "/api/v1/runs/" and method == "POST":
        # an https address is enough to pass the egress rules; no worker calls it here
        settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
        body = {**body, "workflow": str(acme.workflow().pk)}
    client = acme.api(role)
    response = getattr(client, method.lower())(path, body, "application/json")
    if expected == "403":
        assert response.status_code == 403, response.content
        return
    assert expected == "allowed"
    assert response.status_code not in (401, 403, 405), (response.status_code, response.content)
    assert response.status_code < 500
    if response.status_code == 404:
        # a route that exists answers 404 only for an object it can't see: never here
        raise AssertionError(f"{method} {path} answered 404 to {role}")
    if method == "POST" and route == "/api/v1/runs/":
        assert response.status_code == 202, response.content
        assert Run.objects.filter(tenant=acme.tenant).count() == 1
