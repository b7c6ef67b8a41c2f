"""The audit webhooks page (/t/<slug>/audit/webhooks/): owners, admins and auditors read the
delivery state; owners add and delete webhooks."""

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from swrly.audit.models import AuditWebhook
from swrly.audit.webhook_policy import MAX_URL_LENGTH
from tenants.access import get_for_tenant
from tenants.models import AUDIT_READ_ROLES, OWNER_ROLES
from tenants.pages import TenantPageView
from tenants.webhooks import audit_webhook_create, audit_webhook_delete, audit_webhooks_with_state


class AuditWebhookForm(forms.Form):
    url = forms.CharField(label="Receiver URL", max_length=MAX_URL_LENGTH, strip=True)


class AuditWebhookListView(TenantPageView):
    allowed_roles = AUDIT_READ_ROLES

    def render_list(self, form: AuditWebhookForm, **extra: Any) -> HttpResponse:
        return self.page(
            "tenants/auditwebhook_list.html",
            webhooks=audit_webhooks_with_state(tenant=self.tenant),
            form=form,
            can_write_webhooks=self.membership.role in OWNER_ROLES,
            **extra,
        )

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(AuditWebhookForm())


class AuditWebhookAddView(AuditWebhookListView):
    allowed_roles = OWNER_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return redirect(self.url("tenants:audit-webhook-list"))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = AuditWebhookForm(request.POST)
        if not form.is_valid():
            return self.render_list(form)
        try:
            webhook, secret = audit_webhook_create(
                tenant=self.tenant, url=form.cleaned_data["url"], by=self.by, request=request
            )
        except ValidationError as exc:
            form.add_error("url", exc)
            return self.render_list(form)
        # Shown in this response only; never stored in the clear, never put in the session.
        return self.render_list(AuditWebhookForm(), new_webhook=webhook, new_secret=secret)


class AuditWebhookDeleteView(TenantPageView):
    allowed_roles = OWNER_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, webhook_id: str) -> HttpResponse:
        webhook = get_for_tenant(
            AuditWebhook, tenant=self.tenant, pk=webhook_id, actor=self.actor, request=request
        )
        audit_webhook_delete(webhook=webhook, by=self.by, request=request)
        messages.success(request, "Deleted the audit webhook.")
        return redirect(self.url("tenants:audit-webhook-list"))
