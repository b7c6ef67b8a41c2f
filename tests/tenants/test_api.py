import pytest
from django.db import connection

from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor
from tenants.models import ApiToken, Role
from tenants.services import api_token_revoke


def test_me_names_the_tokens_tenant_and_role(acme):
    response = acme.api(Role.DEVELOPER).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json() == {
        "tenant": "acme",
        "token_name": "developer-token",
        "role": "developer",
    }


def test_me_records_the_tokens_last_use(acme):
    assert acme.token(Role.AUDITOR).last_used_at is None
    acme.api(Role.AUDITOR).get("/api/v1/me/")
    assert acme.token(Role.AUDITOR).last_used_at is not None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer swr_00000000_unknownsecret",
        "Bearer not-a-token",
        "Token something",
        "Bearer ",
    ],
)
def test_unknown_or_malformed_token_answers_401_json(acme, client, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/v1/me/", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert set(body["error"]) == {"code", "message", "fields"}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_guessed_secret_with_a_real_prefix_is_refused(acme, client):
    real = acme.tokens[Role.OWNER]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    response = client.get("/api/v1/me/", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_revoked_token_answers_401_and_its_use_is_audited(acme):
    token = acme.token(Role.ADMIN)
    api_token_revoke(token=token, actor=Actor.system("tests"))
    response = acme.api(Role.ADMIN).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or revoked API token."
    denied = AuditEvent.objects.get(tenant=acme.tenant, action="access.denied")
    assert denied.target == f"token:{token.pk}"
    assert denied.metadata["reason"] == "revoked token presented"


def test_no_token_secret_is_stored_anywhere_in_the_database(acme, globex):
    secrets = list(acme.tokens.values()) + list(globex.tokens.values())
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            dump.extend(str(row) for row in cursor.fetchall())
    text = "\n".join(dump)
    for secret in secrets:
        assert secret not in text
        assert secret.split("_", 2)[2] not in text  # nor its random part
    assert ApiToken.objects.filter(prefix=secrets[0].split("_")[1]).count() == 1


def test_token_list_is_for_owners_admins_and_auditors(acme):
    for role in (Role.OWNER, Role.ADMIN, Role.AUDITOR):
        response = acme.api(role).get("/api/v1/tokens/")
        assert response.status_code == 200
        names = {t["name"] for t in response.json()["results"]}
        assert names == {f"{r}-token" for r in Role}
    response = acme.api(Role.DEVELOPER).get("/api/v1/tokens/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    denials = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied")
    assert [e.metadata["reason"] for e in denials] == ["role developer not allowed to GET"]


def test_token_detail_never_shows_the_secret_or_digest(acme):
    token = acme.token(Role.DEVELOPER)
    response = acme.api(Role.OWNER).get(f"/api/v1/tokens/{token.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["prefix"] == token.display_prefix
    assert "digest" not in body
    assert acme.tokens[Role.DEVELOPER] not in response.content.decode()


def test_unknown_token_id_is_404_and_audited(acme):
    before = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").count()
    response = acme.api(Role.OWNER).get("/api/v1/tokens/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert (
        AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").count() == before + 1
    )


def test_openapi_schema_is_served(client, db):
    response = client.get("/api/v1/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert b"/api/v1/me/" in response.content


def test_a_malformed_cursor_or_id_answers_json_not_html(acme):
    api = acme.api(Role.OWNER)
    bad_cursor = api.get("/api/v1/tokens/?cursor=%C3%AAM8")
    assert bad_cursor.status_code == 400
    assert "cursor" in bad_cursor.json()["error"]["fields"]
    odd_id = api.get("/api/v1/tokens/0.5/")
    assert odd_id.status_code == 404
    assert odd_id.json()["error"]["code"] == "not_found"
    nowhere = api.get("/api/v1/no-such-route/")
    assert nowhere.status_code == 404
    assert nowhere["Content-Type"] == "application/json"
