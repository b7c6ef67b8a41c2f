"""API tokens never outlive the authority of the person who made them.

A token acts with at most its creator's *current* role: removing a member revokes every token
they created, demoting one revokes their tokens whose role is not within the new role, and
revoking a token revokes every token created with it. Authentication checks it again (a
membership row edited by hand), and services check the acting principal again under lock.
"""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from runs.models import Run, Workflow
from swrly.audit.models import AuditEvent
from tenants.authority import AuthorityLost, Principal, token_authority_refusal
from tenants.models import ApiToken, Membership, Role
from tenants.services import membership_change_role, membership_remove
from tests.test_role_matrix import BODIES, MATRIX, _target

# Written out, not computed with tenants.models.role_within: the token roles a member of each
# role (None: no longer a member) may hold. Roles are capability sets, not a ladder.
HOLDS = {
    Role.OWNER: {Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.AUDITOR},
    Role.ADMIN: {Role.ADMIN, Role.DEVELOPER, Role.AUDITOR},
    Role.DEVELOPER: {Role.DEVELOPER},
    Role.AUDITOR: {Role.AUDITOR},
    None: set(),
}
# Who can mint tokens at all (developers and auditors cannot reach the tokens page or API).
MINTERS = [Role.OWNER, Role.ADMIN]
SECRET = re.compile(r'<code class="copy">(swr_[^<]+)</code>')


def _member(world, email, role):
    user = get_user_model().objects.create_user(username=email, email=email, password=None)
    return Membership.objects.create(tenant=world.tenant, user=user, role=role)


def _page_token(world, membership, role, name="mine"):
    """A token made on the tokens page by the member: (row, secret)."""
    client = Client()
    client.force_login(membership.user)
    response = client.post(f"/t/{world.tenant.slug}/tokens/", {"name": name, "role": role})
    assert response.status_code == 200, response.content
    (secret,) = SECRET.findall(response.content.decode())
    return ApiToken.objects.get(tenant=world.tenant, name=name), secret


def _api(secret):
    return Client(headers={"Authorization": f"Bearer {secret}"})


def _api_token(secret, role, name):
    """A token made over the API with the token `secret`: (row, secret)."""
    response = _api(secret).post(
        "/api/v1/tokens/", {"name": name, "role": role}, "application/json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    return ApiToken.objects.get(pk=body["id"]), body["secret"]


def _revocation(token):
    event = AuditEvent.objects.filter(action="token.revoked", target=f"token:{token.pk}").get()
    return event.metadata


CASES = [
    (creator, after, token_role)
    for creator in MINTERS
    for after in [Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.AUDITOR, None]
    if after != creator
    for token_role in sorted(HOLDS[creator])
]


@pytest.mark.parametrize("change", ["service", "row-edited"])
@pytest.mark.parametrize(
    ("creator_role", "after", "token_role"),
    CASES,
    ids=[f"{c}-made-{t}-token-then-{a or 'removed'}" for c, a, t in CASES],
)
def test_a_token_keeps_only_what_its_creator_holds_now(
    acme, creator_role, after, token_role, change
):
    # given a member who made a token on the tokens page, and it works
    creator = _member(acme, "creator@acme.example", creator_role)
    token, secret = _page_token(acme, creator, token_role)
    assert _api(secret).get("/api/v1/me/").json()["role"] == token_role

    # when the member is removed or their role changes
    if change == "service":
        owner = acme.api(Role.OWNER)
        url = f"/api/v1/members/{creator.pk}/"
        if after is None:
            assert owner.delete(url).status_code == 204
        else:
            assert owner.patch(url, {"role": after}, "application/json").status_code == 200
    elif after is None:  # a row changed behind the services' back: only authentication sees it
        Membership.objects.filter(pk=creator.pk).delete()
    else:
        Membership.objects.filter(pk=creator.pk).update(role=after)

    # then the token works only if its role is within the creator's role now
    keeps = token_role in HOLDS[after]
    response = _api(secret).get("/api/v1/me/")
    token.refresh_from_db()
    if keeps:
        assert response.status_code == 200
        assert token.revoked_at is None
        return
    assert response.status_code == 401
    assert token.revoked_at is not None
    if change == "service":
        reason = "member.removed" if after is None else "member.role_changed"
    else:
        reason = "token.authority_lost"
        denied = AuditEvent.objects.filter(action="access.denied", target=f"token:{token.pk}")
        assert "token without authority" in denied.get().metadata["reason"]
    assert _revocation(token)["reason"] == reason


def _state(world):
    return (
        sorted(Membership.objects.filter(tenant=world.tenant).values_list("user_id", "role")),
        sorted(ApiToken.objects.filter(tenant=world.tenant).values_list("pk", "revoked_at")),
        sorted(
            Workflow.objects.filter(tenant=world.tenant).values_list(
                "pk", "name", "description", "updated_at"
            )
        ),
        sorted(Run.objects.filter(tenant=world.tenant).values_list("pk", "status")),
    )


def _removed_admin(world):
    admin = _member(world, "leaver@acme.example", Role.ADMIN)
    _, secret = _page_token(world, admin, Role.ADMIN)
    owner = world.client(Role.OWNER)
    assert owner.post(f"/t/acme/members/{admin.pk}/remove/").status_code == 302
    return secret


def _demoted_owner(world):
    owner2 = _member(world, "second-owner@acme.example", Role.OWNER)
    _, secret = _page_token(world, owner2, Role.OWNER)
    response = world.api(Role.OWNER).patch(
        f"/api/v1/members/{owner2.pk}/", {"role": "admin"}, "application/json"
    )
    assert response.status_code == 200
    return secret


def _demoted_admin(world):
    admin = _member(world, "demoted@acme.example", Role.ADMIN)
    _, secret = _page_token(world, admin, Role.ADMIN)
    owner = world.client(Role.OWNER)
    response = owner.post(f"/t/acme/members/{admin.pk}/role/", {"role": "developer"})
    assert response.status_code == 302
    return secret


def _minted_by_removed_admin(world):
    """A token the removed admin's token made over the API."""
    admin = _member(world, "minter@acme.example", Role.ADMIN)
    _, parent = _page_token(world, admin, Role.ADMIN)
    _, secret = _api_token(parent, Role.DEVELOPER, "child")
    assert world.api(Role.OWNER).delete(f"/api/v1/members/{admin.pk}/").status_code == 204
    return secret


SCENARIOS = {
    "removed-admin": _removed_admin,
    "demoted-owner": _demoted_owner,
    "admin-demoted-to-developer": _demoted_admin,
    "minted-by-removed-admin": _minted_by_removed_admin,
}
# Every route and method that takes a token (the schema, the docs and the public audit signing
# keys take none).
PUBLIC_ROUTES = (
    "/api/v1/schema/",
    "/api/v1/schema.json",
    "/api/v1/docs/",
    "/api/v1/audit-keys/",
)
TOKEN_ROUTES = [(r, m) for r, m, _ in MATRIX if r not in PUBLIC_ROUTES]


@pytest.mark.parametrize(
    ("route", "method"), TOKEN_ROUTES, ids=[f"{m} {r}" for r, m in TOKEN_ROUTES]
)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_route_refuses_a_token_whose_creator_lost_the_authority(
    acme, scenario, route, method, key_store, settings
):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    secret = SCENARIOS[scenario](acme)
    path = _target(acme, route)
    body = BODIES.get((route, method))
    if route == "/api/v1/runs/" and method == "POST":
        body = {**body, "workflow": str(acme.workflow().pk)}
    before = _state(acme)

    response = getattr(_api(secret), method.lower())(path, body, "application/json")

    assert response.status_code == 401, (response.status_code, response.content)
    assert response.json()["error"]["code"] == "authentication_failed"
    assert _state(acme) == before
    assert key_store.dbsize() == 0


def test_a_demoted_owners_token_cannot_patch_its_membership_back(acme):
    owner2 = _member(acme, "second-owner@acme.example", Role.OWNER)
    _, secret = _page_token(acme, owner2, Role.OWNER)
    acme.api(Role.OWNER).patch(
        f"/api/v1/members/{owner2.pk}/", {"role": "admin"}, "application/json"
    )

    response = _api(secret).patch(
        f"/api/v1/members/{owner2.pk}/", {"role": "owner"}, "application/json"
    )

    assert response.status_code == 401
    owner2.refresh_from_db()
    assert owner2.role == Role.ADMIN


def test_a_token_loaded_before_its_creator_was_demoted_is_refused_by_the_service(acme):
    """A request authenticated just before the demotion committed: the service checks again."""
    owner2 = _member(acme, "second-owner@acme.example", Role.OWNER)
    token, _ = _page_token(acme, owner2, Role.OWNER)
    stale = Principal.for_token(ApiToken.objects.get(pk=token.pk))
    acme.api(Role.OWNER).patch(
        f"/api/v1/members/{owner2.pk}/", {"role": "admin"}, "application/json"
    )

    with pytest.raises(AuthorityLost):
        membership_change_role(membership=owner2, role=Role.OWNER, by=stale)

    owner2.refresh_from_db()
    assert owner2.role == Role.ADMIN


def test_a_member_removed_meanwhile_can_no_longer_act_on_a_page(acme):
    admin_membership = Membership.objects.get(user=acme.users[Role.ADMIN])
    stale = Principal.member(admin_membership, user=acme.users[Role.ADMIN])
    auditor = Membership.objects.get(user=acme.users[Role.AUDITOR])
    membership_remove(membership=admin_membership, by=Principal.console("tests"))

    with pytest.raises(AuthorityLost):
        membership_remove(membership=auditor, by=stale)

    assert Membership.objects.filter(pk=auditor.pk).exists()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.AUDITOR])
def test_no_member_raises_their_own_role_on_the_page(acme, role):
    membership = Membership.objects.get(user=acme.users[role])
    client = acme.client(role)
    for higher in sorted(set(Role) - HOLDS[role]):
        client.post(f"/t/acme/members/{membership.pk}/role/", {"role": higher})
        membership.refresh_from_db()
        assert membership.role == role
    assert not AuditEvent.objects.filter(action="member.role_changed").exists()


# --- Who created each token -------------------------------------------------------------------


def test_a_token_made_on_the_page_records_its_creator(acme):
    owner = Membership.objects.get(user=acme.users[Role.OWNER])
    token, _ = _page_token(acme, owner, Role.DEVELOPER, name="from-page")

    body = acme.api(Role.ADMIN).get(f"/api/v1/tokens/{token.pk}/").json()

    assert body["created_by"] == "owner@acme.example"
    assert body["created_by_token"] is None
    assert body["created_via"] == "page"
    event = AuditEvent.objects.get(action="token.created", target=f"token:{token.pk}")
    assert event.actor == "user:owner@acme.example"
    assert event.metadata["via"] == "page"


def test_a_token_made_with_a_token_records_the_token_and_the_person_behind_it(acme):
    admin_token = acme.token(Role.ADMIN)  # made on the page by the owner
    token, secret = _api_token(acme.tokens[Role.ADMIN], Role.AUDITOR, "from-api")

    body = acme.api(Role.OWNER).get(f"/api/v1/tokens/{token.pk}/").json()

    assert body["created_by"] == "owner@acme.example"
    assert body["created_by_token"] == str(admin_token.pk)
    assert body["created_via"] == "api"
    assert token.created_by == acme.users[Role.OWNER]
    event = AuditEvent.objects.get(action="token.created", target=f"token:{token.pk}")
    assert event.metadata["created_by_token"] == str(admin_token.pk)
    page = acme.client(Role.OWNER).get("/t/acme/tokens/").content.decode()
    assert f"with API token admin-token (<code>{admin_token.display_prefix}</code>)" in page
    assert _api(secret).get("/api/v1/me/").status_code == 200


def test_a_command_line_token_says_so_and_outlives_member_changes(acme, capsys):
    call_command("create-api-token", "acme", "--name", "bootstrap", "--role", "admin")
    secret = capsys.readouterr().out.splitlines()[-1]
    cli = ApiToken.objects.get(name="bootstrap")
    child, child_secret = _api_token(secret, Role.DEVELOPER, "made-by-bootstrap")

    assert (cli.created_via, cli.created_by, cli.created_by_token) == ("cli", None, None)
    assert (child.created_via, child.created_by, child.created_by_token) == ("api", None, cli)
    listed = {
        row["name"]: row for row in acme.api(Role.OWNER).get("/api/v1/tokens/").json()["results"]
    }
    assert listed["bootstrap"]["created_via"] == "cli"
    assert listed["bootstrap"]["created_by"] is None
    assert listed["made-by-bootstrap"]["created_by_token"] == str(cli.pk)
    page = acme.client(Role.OWNER).get("/t/acme/tokens/").content.decode()
    assert "from the command line" in page
    event = AuditEvent.objects.get(action="token.created", target=f"token:{cli.pk}")
    assert event.actor == "system:create-api-token"
    # no member stands behind it: removing and demoting members leaves it (and its child) alone
    admin = Membership.objects.get(user=acme.users[Role.ADMIN])
    assert acme.api(Role.OWNER).delete(f"/api/v1/members/{admin.pk}/").status_code == 204
    assert _api(secret).get("/api/v1/me/").status_code == 200
    assert _api(child_secret).get("/api/v1/me/").status_code == 200


def test_every_token_made_after_this_change_names_its_origin(acme, capsys):
    call_command("create-api-token", "acme", "--name", "cli", "--role", "owner")
    _api_token(acme.tokens[Role.OWNER], Role.ADMIN, "api")
    for token in ApiToken.objects.filter(tenant=acme.tenant):
        assert token.created_via in {"page", "api", "cli"}
        # a person stands behind every token except those that stem from the command line
        assert (token.created_by_id is None) == (token.created_via == "cli")


# --- Revocation cascades down the chain -------------------------------------------------------


def test_demoting_a_creator_revokes_tokens_made_with_their_revoked_token(acme):
    owner2 = _member(acme, "second-owner@acme.example", Role.OWNER)
    parent, parent_secret = _page_token(acme, owner2, Role.OWNER)
    # within the new role (admin), but made with the owner token that the demotion revokes
    child, child_secret = _api_token(parent_secret, Role.ADMIN, "child")
    grandchild, grandchild_secret = _api_token(child_secret, Role.AUDITOR, "grandchild")
    # a token owner2 made on the page within the new role stays
    _kept, kept_secret = _page_token(acme, owner2, Role.AUDITOR, name="kept")

    response = acme.api(Role.OWNER).patch(
        f"/api/v1/members/{owner2.pk}/", {"role": "admin"}, "application/json"
    )

    assert response.status_code == 200
    assert _revocation(parent)["reason"] == "member.role_changed"
    assert _revocation(child) | {"parent": str(parent.pk)} == _revocation(child)
    assert _revocation(child)["reason"] == "token.parent_revoked"
    assert _revocation(grandchild)["parent"] == str(child.pk)
    for secret in (parent_secret, child_secret, grandchild_secret):
        assert _api(secret).get("/api/v1/me/").status_code == 401
    assert _api(kept_secret).get("/api/v1/me/").status_code == 200


def test_revoking_a_token_revokes_the_tokens_made_with_it(acme):
    child, child_secret = _api_token(acme.tokens[Role.ADMIN], Role.ADMIN, "child")
    grandchild, grandchild_secret = _api_token(child_secret, Role.AUDITOR, "grandchild")
    _sibling, sibling_secret = _api_token(acme.tokens[Role.OWNER], Role.AUDITOR, "sibling")

    response = acme.api(Role.OWNER).delete(f"/api/v1/tokens/{acme.token(Role.ADMIN).pk}/")

    assert response.status_code == 200
    assert _revocation(acme.token(Role.ADMIN)).get("reason") is None  # revoked on request
    assert _revocation(child) == {
        "name": "child",
        "prefix": child.display_prefix,
        "reason": "token.parent_revoked",
        "parent": str(acme.token(Role.ADMIN).pk),
    }
    assert _revocation(grandchild)["parent"] == str(child.pk)
    assert _api(grandchild_secret).get("/api/v1/me/").status_code == 401
    assert _api(sibling_secret).get("/api/v1/me/").status_code == 200


def test_removing_a_member_revokes_everything_they_created_however_it_was_made(acme):
    admin = _member(acme, "leaver@acme.example", Role.ADMIN)
    page_token, page_secret = _page_token(acme, admin, Role.ADMIN)
    api_token, api_secret = _api_token(page_secret, Role.DEVELOPER, "made-by-api")
    other, other_secret = _page_token(acme, admin, Role.AUDITOR, name="second")

    client = acme.client(Role.OWNER)
    assert client.post(f"/t/acme/members/{admin.pk}/remove/").status_code == 302

    removed = AuditEvent.objects.get(tenant=acme.tenant, action="member.removed")
    after = AuditEvent.objects.filter(tenant=acme.tenant, seq__gte=removed.seq).order_by("seq")
    assert [e.action for e in after] == [
        "member.removed",
        "token.revoked",
        "token.revoked",
        "token.revoked",
    ]
    for token, secret in (
        (page_token, page_secret),
        (api_token, api_secret),
        (other, other_secret),
    ):
        assert _revocation(token)["reason"] == "member.removed"
        assert _api(secret).get("/api/v1/me/").status_code == 401


def test_a_removed_admins_token_can_neither_read_members_nor_mint(acme):
    """The review's example: a removed admin's token read members and minted tokens."""
    admin = Membership.objects.get(user=acme.users[Role.ADMIN])
    _, secret = _page_token(acme, admin, Role.ADMIN)
    assert acme.api(Role.OWNER).delete(f"/api/v1/members/{admin.pk}/").status_code == 204

    assert _api(secret).get("/api/v1/members/").status_code == 401
    minted = _api(secret).post(
        "/api/v1/tokens/", {"name": "x", "role": "admin"}, "application/json"
    )
    assert minted.status_code == 401
    assert not ApiToken.objects.filter(name="x").exists()


def test_authentication_checks_authority_in_one_query(acme):
    _child, child_secret = _api_token(acme.tokens[Role.ADMIN], Role.AUDITOR, "child")
    with CaptureQueriesContext(connection) as queries:
        assert _api(child_secret).get("/api/v1/me/").status_code == 200
    token_reads = [q for q in queries if 'FROM "tenants_apitoken"' in q["sql"]]
    assert len(token_reads) == 1
    assert "tenants_membership" in token_reads[0]["sql"]


def test_existing_tokens_get_their_origin_and_chain_from_the_audit_log(acme):
    """The data migration: API-made tokens had no creator; their token.created event names one."""
    import importlib

    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    name = "0005_api_token_origin_from_audit_log"
    migration = importlib.import_module(f"tenants.migrations.{name}")
    # the models as the migration sees them (AuditEvent was still tenants' then)
    apps = MigrationLoader(connection).project_state(("tenants", name)).apps
    owner, admin_token = acme.users[Role.OWNER], acme.token(Role.ADMIN)
    made_by_api, _ = _api_token(acme.tokens[Role.ADMIN], Role.AUDITOR, "made-by-api")
    call_command("create-api-token", "acme", "--name", "cli", "--role", "admin")
    cli = ApiToken.objects.get(name="cli")
    # a row inserted behind the services' back: no token.created event
    orphan = ApiToken.objects.create(
        tenant=acme.tenant, name="no-event", role=Role.AUDITOR, prefix="0" * 12, digest="x"
    )
    # as they were before this change: no origin, API-made tokens without any creator
    ApiToken.objects.filter(tenant=acme.tenant).update(created_via="api", created_by_token=None)
    ApiToken.objects.filter(pk__in=[made_by_api.pk, cli.pk]).update(created_by=None)

    migration.forwards(apps, None)

    admin_token.refresh_from_db()
    made_by_api.refresh_from_db()
    cli.refresh_from_db()
    assert (admin_token.created_via, admin_token.created_by) == ("page", owner)
    assert made_by_api.created_via == "api"
    assert made_by_api.created_by_token == admin_token
    assert made_by_api.created_by == owner  # the person behind the token that made it
    assert (cli.created_via, cli.created_by, cli.created_by_token) == ("cli", None, None)
    orphan.refresh_from_db()
    assert orphan.created_via == "api"
    assert token_authority_refusal(orphan, creator_role=None, parent=None) == "it has no creator"


def test_authority_lost_in_a_service_answers_the_api_error_shape():
    from swrly.web.errors import exception_handler

    response = exception_handler(AuthorityLost("the API token was revoked"), {})

    assert response.status_code == 403
    assert response.data == {
        "error": {
            "code": "permission_denied",
            "message": "the API token was revoked",
            "fields": {},
        }
    }


@pytest.mark.parametrize("authority", [*Role, None], ids=lambda r: r or "removed")
def test_role_within_is_the_table_in_the_docs(authority):
    from tenants.models import role_within

    held = {role for role in Role if authority is not None and role_within(role, authority)}
    assert held == HOLDS[authority]


def test_leaving_one_tenant_leaves_the_tokens_made_in_another(acme, globex):
    user = acme.users[Role.ADMIN]
    in_globex = Membership.objects.create(tenant=globex.tenant, user=user, role=Role.ADMIN)
    _, globex_secret = _page_token(globex, in_globex, Role.ADMIN)
    acme_membership = Membership.objects.get(tenant=acme.tenant, user=user)
    _, acme_secret = _page_token(acme, acme_membership, Role.ADMIN)

    assert acme.api(Role.OWNER).delete(f"/api/v1/members/{acme_membership.pk}/").status_code == 204

    assert _api(acme_secret).get("/api/v1/me/").status_code == 401
    assert _api(globex_secret).get("/api/v1/me/").json()["tenant"] == "globex"


def test_a_deleted_users_tokens_are_refused_and_still_name_them(acme):
    admin = _member(acme, "deleted@acme.example", Role.ADMIN)
    token, secret = _page_token(acme, admin, Role.ADMIN)
    user_id = admin.user_id
    get_user_model().objects.filter(pk=user_id).delete()  # memberships go with the user

    assert _api(secret).get("/api/v1/me/").status_code == 401

    token.refresh_from_db()
    assert token.created_by_id == user_id
    assert _revocation(token)["reason"] == "token.authority_lost"


def _tokens_without_authority(tenant):
    """Active tokens of the tenant that no longer hold the authority for their role."""
    roles = dict(Membership.objects.filter(tenant=tenant).values_list("user_id", "role"))
    return [
        token.name
        for token in ApiToken.objects.filter(tenant=tenant, revoked_at=None).select_related(
            "created_by_token"
        )
        if token_authority_refusal(
            token, creator_role=roles.get(token.created_by_id), parent=token.created_by_token
        )
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(4))
def test_minting_racing_a_demotion_never_leaves_a_token_beyond_the_new_role(attempt):
    """A token mints an owner token while its creator is demoted: either the mint happens
    first and the demotion revokes it, or the demotion happens first and the mint is refused."""
    import threading

    from tenants.services import api_token_create, tenant_create

    console = Principal.console("tests")
    tenant, _, _ = tenant_create(
        slug=f"race-{attempt}", name="Race", owner_email="first@race.example", actor=console.actor
    )
    user = get_user_model().objects.create_user(username="second@race.example", password=None)
    owner2 = Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    token, _ = api_token_create(
        tenant=tenant, name="owner2", role=Role.OWNER, by=Principal.member(owner2, user=user)
    )
    acting = Principal.for_token(ApiToken.objects.get(pk=token.pk))  # authenticated already
    barrier = threading.Barrier(2)
    outcomes, errors = {}, []

    def demote():
        try:
            barrier.wait()
            membership_change_role(membership=owner2, role=Role.ADMIN, by=console)
            outcomes["demote"] = "done"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def mint():
        try:
            barrier.wait()
            api_token_create(tenant=tenant, name="minted", role=Role.OWNER, by=acting)
            outcomes["mint"] = "created"
        except AuthorityLost:
            outcomes["mint"] = "refused"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=demote), threading.Thread(target=mint)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert outcomes["demote"] == "done"
    assert outcomes["mint"] in {"created", "refused"}
    assert _tokens_without_authority(tenant) == []
    assert not ApiToken.objects.filter(tenant=tenant, role=Role.OWNER, revoked_at=None).exists()
