"""The key-history page under /t/<tenant-slug>/keys/, with the key blocklist."""

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from swrly.custody.forms import BlockedKeyForm
from swrly.custody.key_usage import encryption_key_usage
from swrly.custody.models import BlockedKey
from swrly.custody.selectors import blocked_keys, key_rotations, provider_key_history
from swrly.custody.services import (
    BlockedKeyExists,
    blocked_key_add,
    blocked_key_remove,
    fingerprint_salt,
)
from swrly.keys.fingerprint import key_name
from swrly.web.wording import sentence
from tenants.access import get_for_tenant
from tenants.models import AUDIT_READ_ROLES, MANAGE_ROLES
from tenants.pages import TenantPageView


class KeyHistoryView(TenantPageView):
    """Encryption-key rotations, the tenant's provider keys by fingerprint, its blocklist and
    (for owners, admins and auditors) its fingerprint salt."""

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_history(BlockedKeyForm())

    def render_history(self, form: BlockedKeyForm, status: int = 200) -> HttpResponse:
        salt = None
        if self.membership.role in AUDIT_READ_ROLES:
            salt = fingerprint_salt(tenant=self.tenant).hex()
        response = self.page(
            "custody/key_history.html",
            rotations=key_rotations(tenant=self.tenant),
            provider_keys=provider_key_history(tenant=self.tenant),
            key_usage=encryption_key_usage(),
            blocked_keys=blocked_keys(tenant=self.tenant),
            fingerprint_salt=salt,
            block_form=form,
        )
        response.status_code = status
        return response


@method_decorator(sensitive_post_parameters("key"), name="dispatch")
class BlockedKeyAddView(KeyHistoryView):
    allowed_roles = MANAGE_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return redirect(self.url("custody:key-history"))

    @sensitive_variables("form", "data", "key")
    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = BlockedKeyForm(request.POST)
        if not form.is_valid():
            return self.render_history(BlockedKeyForm(_without_key(request.POST)), status=400)
        data = form.cleaned_data
        key = data["key"]
        try:
            result = blocked_key_add(
                tenant=self.tenant,
                provider=data["provider"],
                fingerprint=data["fingerprint"] or None,
                key=key,
                reason=data["reason"],
                actor=self.actor,
                request=request,
            )
        except BlockedKeyExists as exc:
            retry = BlockedKeyForm(_without_key(request.POST))
            retry.is_valid()
            retry.add_error(None, sentence(exc.messages[0]))
            return self.render_history(retry, status=400)
        finally:
            if key is not None:
                key.discard()
        cancelled = result.cancelled_runs
        entry = result.blocked_key
        name = key_name(entry.hint, entry.fingerprint)
        messages.success(
            request,
            f"Blocked the {result.blocked_key.provider} key {name}"
            + (
                f"; cancelled {cancelled} run{'s' if cancelled != 1 else ''} holding it."
                if cancelled
                else "."
            ),
        )
        return HttpResponseRedirect(self.url("custody:key-history"))


def _without_key(post: Any) -> dict[str, str]:
    """The form's data to show again: never the key."""
    return {name: post.get(name, "") for name in ("provider", "fingerprint", "reason")}


class BlockedKeyRemoveView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, blocked_key_id: str) -> HttpResponse:
        blocked = get_for_tenant(
            BlockedKey, tenant=self.tenant, pk=blocked_key_id, actor=self.actor, request=request
        )
        blocked_key_remove(blocked_key=blocked, actor=self.actor, request=request)
        name = key_name(blocked.hint, blocked.fingerprint)
        messages.success(request, f"Unblocked the {blocked.provider} key {name}.")
        return HttpResponseRedirect(self.url("custody:key-history"))
