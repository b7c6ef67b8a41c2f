"""Shared fixtures: two tenants, a member of every role in `acme`, and an outsider in `globex`."""

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from runs.models import Run, Workflow
from runs.services import workflow_create
from swrly.audit.models import AuditWebhook
from swrly.audit.writer import Actor
from tenants.authority import Principal
from tenants.models import ApiToken, Membership, Role, Tenant
from tenants.services import api_token_create, tenant_create


@dataclass
class TenantWorld:
    tenant: Tenant
    users: dict[str, object]
    tokens: dict[str, str]

    def client(self, role: str) -> Client:
        client = Client()
        client.force_login(self.users[role])
        return client

    def api(self, role: str) -> Client:
        return Client(headers={"Authorization": f"Bearer {self.tokens[role]}"})

    def token(self, role: str) -> ApiToken:
        return ApiToken.objects.get(tenant=self.tenant, name=f"{role}-token")

    def workflow(self) -> Workflow:
        """The tenant's one-step sandbox workflow (created on first use)."""
        existing = Workflow.objects.filter(tenant=self.tenant, name="hello").first()
        return existing or workflow_create(
            tenant=self.tenant,
            name="hello",
            steps=[{"name": "greet", "provider": "sandbox", "model": "sandbox-1", "prompt": "Hi"}],
            actor=Actor.system("tests"),
        )

    def audit_webhook(self) -> AuditWebhook:
        """A new audit webhook of the tenant (to an https address; nothing is delivered)."""
        from tenants.webhooks import audit_webhook_create

        owner = self.users[Role.OWNER]
        by = Principal.member(Membership.objects.get(tenant=self.tenant, user=owner), user=owner)
        webhook, _ = audit_webhook_create(
            tenant=self.tenant, url="https://siem.example/ingest", by=by
        )
        return webhook

    def run(self) -> Run:
        """A queued run row of the tenant's workflow, made without depositing any key."""
        workflow = self.workflow()
        return Run.objects.create(
            tenant=self.tenant,
            workflow=workflow,
            workflow_name=workflow.name,
            steps=workflow.steps,
            triggered_by="system:tests",
        )


def _world(slug: str) -> TenantWorld:
    system = Actor.system("tests")
    tenant, owner, _ = tenant_create(
        slug=slug, name=slug.title(), owner_email=f"owner@{slug}.example", actor=system
    )
    users = {Role.OWNER: owner}
    User = get_user_model()
    for role in (Role.ADMIN, Role.DEVELOPER, Role.AUDITOR):
        email = f"{role}@{slug}.example"
        users[role] = User.objects.create_user(username=email, email=email, password=None)
        Membership.objects.create(tenant=tenant, user=users[role], role=role)
    tokens = {}
    # Made on the tokens page by the owner: every API test authenticates through the check that
    # a token's creator still holds the authority for its role.
    by_owner = Principal.member(Membership.objects.get(tenant=tenant, user=owner), user=owner)
    for role in Role:
        _, tokens[role] = api_token_create(
            tenant=tenant, name=f"{role}-token", role=role, by=by_owner
        )
    return TenantWorld(tenant=tenant, users=users, tokens=tokens)


@pytest.fixture
def acme(db) -> TenantWorld:
    return _world("acme")


@pytest.fixture
def globex(db) -> TenantWorld:
    """The other tenant: its members are outsiders to acme."""
    return _world("globex")


def pytest_configure(config):
    from django.conf import settings

    # Hashing passwords at full strength costs seconds per test run and proves nothing here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def key_store():
    """This test worker's key-store database, empty before and after the test.

    A client of the session's key store, whatever its topology (SWRLY_TEST_KEY_STORE): on a
    cluster, FLUSHDB, SCAN and SCRIPT go to every primary and keyed commands to their node.
    """
    from swrly.keys.store import get_client

    client = get_client()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def captured():
    """Every log record of the test, from every logger, as the JSON console handler writes it."""
    import io
    import logging

    from swrly.logs import JsonFormatter, RequestIdFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def audit_test_event():
    """A `test.event` action declared for the test: chain mechanics need an event of no meaning."""
    from swrly.audit.events import EventType, declare, undeclare

    declare(
        EventType(
            "test.event",
            "anything",
            ("i", "w", "big", "small", "nested"),
            "tests",
        )
    )
    yield "test.event"
    undeclare("test.event")
