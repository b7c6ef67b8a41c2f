"""The tenant settings page (/t/<slug>/settings/): its policies (tenants/policy.py).

Owners change them; admins and auditors read them; developers are refused (their workflow and
run errors already name what the policy refuses).
"""

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from tenants.models import AUDIT_READ_ROLES, OWNER_ROLES
from tenants.pages import TenantPageView
from tenants.policy import (
    RETENTION_MAX_DAYS,
    PolicyInvalid,
    key_ttl,
    key_ttl_floor,
    platform_providers,
    tenant_policy_update,
)

ALL_PROVIDERS = "all"
ONLY_PROVIDERS = "only"


class PolicyForm(forms.Form):
    """The settings page's form; the rules are validate_policy's, applied by the service."""

    providers_mode = forms.ChoiceField(
        choices=[
            (ALL_PROVIDERS, "Every provider the platform enables"),
            (ONLY_PROVIDERS, "Only the providers ticked below"),
        ],
        widget=forms.RadioSelect,
        label="Providers",
    )
    providers = forms.MultipleChoiceField(
        choices=[], required=False, widget=forms.CheckboxSelectMultiple, label="Allowed providers"
    )
    max_key_ttl = forms.IntegerField(required=False, label="Maximum key TTL (seconds)")
    retention_days = forms.IntegerField(required=False, label="Retention (days)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        enabled = platform_providers()
        providers = cast(forms.MultipleChoiceField, self.fields["providers"])
        providers.choices = [(name, name) for name in enabled]
        for name in enabled:
            self.fields[f"models_{name}"] = forms.CharField(
                required=False,
                label=f"{name} models",
                widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
                help_text="One per line; a trailing * allows a prefix. Empty: any model.",
            )
        self.model_fields = [(name, self[f"models_{name}"]) for name in enabled]

    def changes(self) -> dict[str, Any]:
        """The policy change this form asks for (every field: the form shows them all)."""
        data = self.cleaned_data
        models = {}
        for name in platform_providers():
            lines = [line.strip() for line in data.get(f"models_{name}", "").splitlines()]
            if any(lines):
                models[name] = [line for line in lines if line]
        return {
            "allowed_providers": None
            if data["providers_mode"] == ALL_PROVIDERS
            else list(data["providers"]),
            "allowed_models": models,
            "max_key_ttl": data["max_key_ttl"],
            "retention_days": data["retention_days"],
        }


def _initial(tenant: Any) -> dict[str, Any]:
    allowed = tenant.allowed_providers
    initial: dict[str, Any] = {
        "providers_mode": ALL_PROVIDERS if allowed is None else ONLY_PROVIDERS,
        "providers": allowed or [],
        "max_key_ttl": tenant.max_key_ttl,
        "retention_days": tenant.retention_days,
    }
    for name, patterns in (tenant.allowed_models or {}).items():
        initial[f"models_{name}"] = "\n".join(patterns)
    return initial


class TenantSettingsView(TenantPageView):
    allowed_roles = AUDIT_READ_ROLES

    def render_page(self, form: PolicyForm) -> HttpResponse:
        tenant = self.tenant
        enabled = platform_providers()
        allowed = tenant.allowed_providers
        return self.page(
            "tenants/tenant_settings.html",
            form=form,
            can_edit=self.membership.role in OWNER_ROLES,
            platform_providers=enabled,
            effective_providers=[p for p in enabled if allowed is None or p in allowed],
            stale_providers=[p for p in allowed or [] if p not in enabled],
            allowed_models=sorted((tenant.allowed_models or {}).items()),
            platform_key_ttl=int(settings.BYOK_TOKEN_TTL),
            key_ttl=key_ttl(tenant),
            key_ttl_min=key_ttl_floor(),
            retention_max=RETENTION_MAX_DAYS,
        )

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_page(PolicyForm(initial=_initial(self.tenant)))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        self.require_roles(OWNER_ROLES)
        form = PolicyForm(request.POST)
        if not form.is_valid():
            return self.render_page(form)
        try:
            changed = tenant_policy_update(
                tenant=self.tenant, changes=form.changes(), actor=self.actor, request=request
            )
        except PolicyInvalid as exc:
            for field, problems in exc.errors.items():
                name = field.replace("allowed_models.", "models_").replace(
                    "allowed_providers", "providers"
                )
                form.add_error(name if name in form.fields else None, problems)
            return self.render_page(form)
        if changed:
            messages.success(request, f"Policy saved: {', '.join(sorted(changed))} changed.")
        else:
            messages.info(request, "Nothing changed.")
        return redirect(self.url("tenants:tenant-settings"))
