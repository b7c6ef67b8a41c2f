"""Two-step verification: enrolment with a real TOTP code, sign-in, recovery codes, lockout,
and the tenant's MFA policy."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from swrly.audit.models import AuditEvent
from swrly.identity.models import TenantMfaPolicy
from tenants.models import Role
from tests.identity.conftest import totp_code

PASSWORD = "silver-otter-marmalade-7"
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def _with_password(world, role):
    user = world.users[role]
    user.set_password(PASSWORD)
    user.save()
    return user


def _enrol(client) -> tuple[TOTPDevice, list[str]]:
    """Enrol through the page: read the secret the page shows, answer with a computed code."""
    page = client.get(reverse("mfa-setup"))
    assert page.status_code == 200
    device = TOTPDevice.objects.get(confirmed=False)
    from swrly.identity.mfa import totp_secret_base32

    assert totp_secret_base32(device).encode() in page.content
    assert b"otpauth://totp/" in page.content
    done = client.post(reverse("mfa-setup"), {"code": totp_code(device)})
    assert done.status_code == 200
    codes = done.context["recovery_codes"]
    device.refresh_from_db()
    assert device.confirmed
    return device, codes


def _sign_in(username: str, password: str = PASSWORD) -> tuple[Client, object]:
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": password})
    return client, response


@pytest.fixture
def enrolled(acme):
    """acme's developer with a password and an enrolled authenticator, at T0."""
    with time_machine.travel(T0, tick=False) as traveller:
        user = _with_password(acme, Role.DEVELOPER)
        device, codes = _enrol(acme.client(Role.DEVELOPER))
        yield user, device, codes, traveller


def test_enrolment_needs_a_right_code_and_shows_recovery_codes_once(acme):
    with time_machine.travel(T0, tick=False):
        client = acme.client(Role.AUDITOR)
        client.get(reverse("mfa-setup"))
        device = TOTPDevice.objects.get(user=acme.users[Role.AUDITOR])
        wrong = client.post(reverse("mfa-setup"), {"code": totp_code(device, offset=5)})
        assert b"not valid" in wrong.content
        assert not TOTPDevice.objects.filter(confirmed=True).exists()
        # a failed confirmation shows a new secret: the first one is dropped
        device = TOTPDevice.objects.get(user=acme.users[Role.AUDITOR], confirmed=False)
    with time_machine.travel(T0 + timedelta(seconds=5), tick=False):
        done = client.post(reverse("mfa-setup"), {"code": totp_code(device)})
        # shown once: the page afterwards counts them and shows none
        later = client.get(reverse("mfa-setup"))
    codes = done.context["recovery_codes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(code.encode() in done.content for code in codes)
    stored = set(StaticToken.objects.values_list("token", flat=True))
    assert len(stored) == 10
    assert not stored & {c.replace("-", "") for c in codes} | (stored & set(codes))
    event = AuditEvent.objects.get(tenant=acme.tenant, action="mfa.enrolled")
    assert event.metadata == {"method": "totp", "recovery_codes": 10}
    assert event.actor == f"user:{acme.users[Role.AUDITOR].username}"
    assert b"10 recovery codes left" in later.content
    assert not any(code.encode() in later.content for code in codes)


def test_sign_in_asks_for_the_code_after_the_password(acme, enrolled):
    user, device, _, traveller = enrolled
    traveller.shift(60)
    client, response = _sign_in(user.username)
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa-verify")
    # the password alone signs no one in
    dashboard = reverse("runs:dashboard", kwargs={"tenant_slug": "acme"})
    assert client.get(dashboard).status_code == 302
    logins = AuditEvent.objects.filter(action="auth.login", target=f"user:{user.username}")
    before = logins.count()  # the fixture's own sign-in
    assert before == 1
    # a wrong code is refused and audited
    wrong = client.post(reverse("mfa-verify"), {"code": totp_code(device, offset=10)})
    assert wrong.status_code == 400
    failed = AuditEvent.objects.get(tenant=acme.tenant, action="auth.mfa_failed")
    assert failed.target == f"user:{user.username}"
    assert failed.actor.startswith("anonymous")
    traveller.shift(30)  # past django-otp's throttle delay and into the next time step
    # when
    ok = client.post(reverse("mfa-verify"), {"code": totp_code(device)})
    # then
    assert ok.status_code == 302
    assert client.get(dashboard).status_code == 200
    assert logins.count() == before + 1


def test_a_code_is_accepted_once(acme, enrolled):
    user, device, _, traveller = enrolled
    traveller.shift(60)
    first, _ = _sign_in(user.username)
    code = totp_code(device)
    assert first.post(reverse("mfa-verify"), {"code": code}).status_code == 302
    replay, _ = _sign_in(user.username)
    refused = replay.post(reverse("mfa-verify"), {"code": code})
    assert refused.status_code == 400
    assert replay.get(reverse("runs:dashboard", kwargs={"tenant_slug": "acme"})).status_code == 302


def test_a_recovery_code_signs_in_once(acme, enrolled):
    user, _, codes, traveller = enrolled
    traveller.shift(60)
    client, _ = _sign_in(user.username)
    ok = client.post(reverse("mfa-verify"), {"code": codes[0].upper()})
    assert ok.status_code == 302
    used = AuditEvent.objects.get(tenant=acme.tenant, action="mfa.recovery_code_used")
    assert used.metadata == {"remaining": 9}
    traveller.shift(60)
    again, _ = _sign_in(user.username)
    assert again.post(reverse("mfa-verify"), {"code": codes[0]}).status_code == 400
    traveller.shift(60)
    assert again.post(reverse("mfa-verify"), {"code": codes[1]}).status_code == 302


def test_new_recovery_codes_need_a_code_and_retire_the_old_ones(acme, enrolled):
    user, device, codes, traveller = enrolled
    traveller.shift(60)
    client, _ = _sign_in(user.username)
    client.post(reverse("mfa-verify"), {"code": totp_code(device)})
    refused = client.post(reverse("mfa-setup"), {"code": "000000"})
    assert b"not valid" in refused.content
    traveller.shift(60)
    fresh = client.post(reverse("mfa-setup"), {"code": totp_code(device)}).context["recovery_codes"]
    assert not set(fresh) & set(codes)
    assert AuditEvent.objects.filter(action="mfa.recovery_codes_regenerated").count() == 1
    traveller.shift(60)
    other, _ = _sign_in(user.username)
    assert other.post(reverse("mfa-verify"), {"code": codes[2]}).status_code == 400
    traveller.shift(60)
    assert other.post(reverse("mfa-verify"), {"code": fresh[0]}).status_code == 302


def test_wrong_codes_count_toward_the_lockout(acme, enrolled, settings):
    user, _, _, traveller = enrolled
    traveller.shift(60)
    client, _ = _sign_in(user.username)
    statuses = []
    for _ in range(settings.AXES_FAILURE_LIMIT):
        traveller.shift(60)
        statuses.append(client.post(reverse("mfa-verify"), {"code": "123456"}).status_code)
    assert statuses[-1] == 429 or statuses[-1] == 403
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="auth.locked_out").exists()
    # locked out: neither the password nor a right code gets in now
    traveller.shift(60)
    retry, response = _sign_in(user.username)
    assert response.status_code in (403, 429)
    assert retry.get(reverse("runs:dashboard", kwargs={"tenant_slug": "acme"})).status_code == 302


def test_a_session_that_skipped_the_second_factor_is_ended(acme, enrolled):
    user, *_ = enrolled
    client = Client()
    client.force_login(user)  # as any sign-in path other than the sign-in page would
    response = client.get(reverse("runs:dashboard", kwargs={"tenant_slug": "acme"}))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_the_policy_sends_members_of_required_roles_to_enrolment(acme):
    policy_url = reverse("identity:mfa-policy", kwargs={"tenant_slug": "acme"})
    # only owners change it; admins and auditors read it; developers do not
    assert (
        acme.client(Role.ADMIN).post(policy_url, {"required_roles": ["admin"]}).status_code == 403
    )
    assert acme.client(Role.AUDITOR).get(policy_url).status_code == 200
    assert acme.client(Role.DEVELOPER).get(policy_url).status_code == 403
    saved = acme.client(Role.OWNER).post(policy_url, {"required_roles": ["developer", "auditor"]})
    assert saved.status_code == 302
    assert TenantMfaPolicy.objects.get(tenant=acme.tenant).required_roles == [
        "auditor",
        "developer",
    ]
    event = AuditEvent.objects.get(tenant=acme.tenant, action="mfa.policy_changed")
    assert event.metadata == {"from": [], "to": ["auditor", "developer"]}
    dashboard = reverse("runs:dashboard", kwargs={"tenant_slug": "acme"})
    # when
    developer = acme.client(Role.DEVELOPER)
    sent = developer.get(dashboard)
    # then
    assert sent.status_code == 302
    assert sent["Location"].startswith(reverse("mfa-setup"))
    assert "required=acme" in sent["Location"]
    assert acme.client(Role.ADMIN).get(dashboard).status_code == 200
    # the API is not affected
    assert acme.api(Role.DEVELOPER).get(reverse("api:workflow-list")).status_code == 200
    # once enrolled, the pages open
    _enrol(developer)
    assert developer.get(dashboard).status_code == 200


def test_the_mfa_policy_api(acme):
    url = reverse("api:mfa-policy")
    assert acme.api(Role.AUDITOR).get(url).json()["required_roles"] == []
    refused = acme.api(Role.ADMIN).patch(url, {"required_roles": ["admin"]}, "application/json")
    assert refused.status_code == 403
    bad = acme.api(Role.OWNER).patch(url, {"required_roles": ["root"]}, "application/json")
    assert bad.status_code == 400
    ok = acme.api(Role.OWNER).patch(url, {"required_roles": ["owner"]}, "application/json")
    assert ok.status_code == 200
    assert ok.json()["required_roles"] == ["owner"]
    assert acme.api(Role.ADMIN).get(url).json()["required_roles"] == ["owner"]
    event = AuditEvent.objects.get(tenant=acme.tenant, action="mfa.policy_changed")
    assert event.actor.startswith("token:owner-token")
    # the same again changes nothing and writes nothing
    acme.api(Role.OWNER).patch(url, {"required_roles": ["owner"]}, "application/json")
    assert AuditEvent.objects.filter(action="mfa.policy_changed").count() == 1
