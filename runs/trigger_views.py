"""Acting on runs in the browser: trigger a run of a workflow, cancel a queued or running run.

Both go through the services the API uses (`run_trigger`, `run_cancel`), with the same audit
events. Provider keys typed into the form are held as ProviderSecret objects from the moment
they are read and discarded when the request ends; they are never rendered back, put in a
message, the session or a redirect, and every POST parameter is hidden from error reports.
"""

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from runs.fairness import QueueFull
from runs.models import FINISHED, Run, Workflow
from runs.services import (
    IdempotencyConflict,
    KeyBlocked,
    RunFinished,
    run_cancel,
    run_trigger,
)
from runs.views import RunPageView
from runs.workflow_spec import SpecError, references
from swrly import keys, metrics
from swrly.input_limits import MAX_JSON_DEPTH, TooDeep, unstorable_paths
from swrly.keys.redaction import redact
from swrly.keys.secret import ProviderSecret
from swrly.providers import PROVIDERS
from swrly.web.wording import sentence
from tenants.access import get_for_tenant
from tenants.models import WRITE_ROLES
from tenants.pages import TenantPageView

# Who triggers and cancels runs: the roles the API lets POST /api/v1/runs/ and
# POST /api/v1/runs/<id>/cancel/ (docs/api.md, the role matrix).
RUN_WRITE_ROLES = WRITE_ROLES
KEY_FIELD_PREFIX = "key_"


def new_idempotency_key() -> str:
    """A fresh idempotency key for one rendering of the form: a double submit makes one run."""
    return "page-" + secrets.token_urlsafe(24)


class RunTriggerForm(forms.Form):
    """The form's fields other than the keys (those are read straight into ProviderSecret).

    The idempotency key is rendered by the template, new for every rendering of the form.
    """

    idempotency_key = forms.CharField(max_length=255, min_length=16, strip=False)
    # Rendered by the template from `input_text` (redacted when shown again), never by the form.
    input = forms.CharField(required=False, strip=True)

    def clean_idempotency_key(self) -> str:
        value: str = self.cleaned_data["idempotency_key"]
        if not all(0x21 <= ord(c) <= 0x7E for c in value):
            raise forms.ValidationError("The form is out of date. Reload the page.")
        return value

    def clean_input(self) -> dict:
        text = self.cleaned_data["input"] or "{}"
        try:
            value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except RecursionError:
            raise forms.ValidationError(
                f"The input nests deeper than {MAX_JSON_DEPTH} levels."
            ) from None
        except ValueError as exc:
            raise forms.ValidationError(f"The input is not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('The input is a JSON object, e.g. {"topic": "BYOK"}.')
        try:
            if unstorable_paths(value):
                raise forms.ValidationError("The input holds characters Swrly cannot store.")
        except TooDeep:
            raise forms.ValidationError(
                f"The input nests deeper than {MAX_JSON_DEPTH} levels."
            ) from None
        return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


@dataclass
class KeyField:
    """One password input: the key of one provider the workflow calls."""

    provider: str
    label: str
    name: str
    errors: list[str] = field(default_factory=list)


def _key_fields(workflow: Workflow) -> list[KeyField]:
    return [
        KeyField(
            provider=provider,
            label=f"{PROVIDERS[provider].display_name if provider in PROVIDERS else provider} key",
            name=f"{KEY_FIELD_PREFIX}{provider}",
        )
        for provider in workflow.providers
    ]


def input_names(workflow: Workflow) -> list[str]:
    """The input fields the workflow's templates read (`{{ input.NAME }}`), in order."""
    names: dict[str, None] = {}
    for step in workflow.steps:
        for template in (step.get("system") or "", step.get("prompt") or ""):
            for path in references(template):
                if path[0] == "input" and len(path) >= 2:
                    names.setdefault(path[1], None)
    return list(names)


def input_skeleton(workflow: Workflow) -> str:
    """The run input the workflow's templates read, as JSON with empty values to fill in."""
    names = input_names(workflow)
    return json.dumps(dict.fromkeys(names, ""), indent=2) if names else "{}"


@method_decorator(sensitive_post_parameters(), name="post")
class RunTriggerView(TenantPageView):
    """GET: the workflow, one password field per provider it calls, and the run input. POST:
    the run, through `run_trigger` (as POST /api/v1/runs/), then its page."""

    allowed_roles = RUN_WRITE_ROLES

    def workflow(self, request: HttpRequest, workflow_id: str) -> Workflow:
        return get_for_tenant(
            Workflow, tenant=self.tenant, pk=workflow_id, actor=self.actor, request=request
        )

    def render_form(
        self,
        workflow: Workflow,
        form: RunTriggerForm,
        key_fields: list[KeyField],
        *,
        input_text: str,
        errors: list[str] | None = None,
        status: int = 200,
    ) -> HttpResponse:
        response = self.page(
            "runs/run_trigger.html",
            workflow=workflow,
            form=form,
            input_text=input_text,
            key_fields=key_fields,
            errors=errors or [],
            input_names=input_names(workflow),
            # New at every rendering: submitting this form twice makes one run.
            idempotency_key=new_idempotency_key(),
        )
        response.status_code = status
        return response

    def get(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.workflow(request, workflow_id)
        return self.render_form(
            workflow, RunTriggerForm(), _key_fields(workflow), input_text=input_skeleton(workflow)
        )

    @sensitive_variables("provider_keys", "secret", "value")
    def post(self, request: HttpRequest, tenant_slug: str, workflow_id: str) -> HttpResponse:
        workflow = self.workflow(request, workflow_id)
        key_fields = _key_fields(workflow)
        # Held for redaction at once; the plaintext never goes back into a form or a page.
        provider_keys: dict[str, ProviderSecret] = {}
        try:
            for key_field in key_fields:
                value = request.POST.get(key_field.name, "")
                if value:
                    provider_keys[key_field.provider] = ProviderSecret(value)
                else:
                    key_field.errors.append(f"Enter the {key_field.label}.")
            form = RunTriggerForm(_without_keys(request.POST))
            if not form.is_valid() or any(f.errors for f in key_fields):
                return self._refused(workflow, form, key_fields, status=400)
            return self._trigger(request, workflow, form, key_fields, provider_keys)
        finally:
            for secret in provider_keys.values():
                secret.discard()

    def _trigger(
        self,
        request: HttpRequest,
        workflow: Workflow,
        form: RunTriggerForm,
        key_fields: list[KeyField],
        provider_keys: dict[str, ProviderSecret],
    ) -> HttpResponse:
        by_provider = {f.provider: f for f in key_fields}
        try:
            run, replayed = run_trigger(
                tenant=self.tenant,
                workflow=workflow,
                run_input=form.cleaned_data["input"],
                provider_keys=provider_keys,
                actor=self.actor,
                request=request,
                idempotency_key=form.cleaned_data["idempotency_key"],
            )
        except SpecError as exc:
            errors: list[str] = []
            for name, texts in exc.errors.items():
                provider = name.removeprefix("provider_keys.")
                if provider in by_provider:
                    by_provider[provider].errors.extend(_sentence(t) for t in texts)
                elif name == "input":
                    form.add_error("input", [_sentence(t) for t in texts])
                else:
                    errors.extend(f"{name}: {_sentence(t)}" for t in texts)
            return self._refused(workflow, form, key_fields, errors=errors, status=400)
        except IdempotencyConflict:
            return self._refused(
                workflow,
                form,
                key_fields,
                errors=[
                    "This form was already sent with other values, and that run was created. "
                    "Check the runs list before you start another; the form below is new."
                ],
                status=409,
            )
        except KeyBlocked as exc:
            by_provider[exc.provider].errors.append(_sentence(str(exc)))
            return self._refused(workflow, form, key_fields, status=400)
        except keys.KeyStoreUnavailable:
            return self._refused(
                workflow,
                form,
                key_fields,
                errors=["The key store is unavailable. No run was created; try again later."],
                status=503,
            )
        except QueueFull as exc:
            metrics.run_refused("queue_full")
            response = self._refused(
                workflow,
                form,
                key_fields,
                errors=[
                    f"No run was created: this tenant already has {exc.limit} runs waiting for "
                    f"a worker, its limit. Nothing was sent to the key store. Try again in "
                    f"{exc.retry_after} seconds."
                ],
                status=429,
            )
            response["Retry-After"] = str(exc.retry_after)
            return response
        if replayed:
            messages.info(request, "This form was already sent: this is the run it started.")
        else:
            messages.success(request, f"Run of {workflow.name} queued.")
        return HttpResponseRedirect(
            reverse("runs:run-detail", kwargs={"tenant_slug": self.tenant.slug, "run_id": run.pk})
        )

    def _refused(
        self,
        workflow: Workflow,
        form: RunTriggerForm,
        key_fields: list[KeyField],
        *,
        errors: list[str] | None = None,
        status: int,
    ) -> HttpResponse:
        """The form again with its errors: the input as typed but redacted (a key pasted into it
        is not shown back), the key fields empty (the keys are typed again) and a new
        idempotency key (the next submit is a new request)."""
        return self.render_form(
            workflow,
            form,
            key_fields,
            input_text=redact(str(form.data.get("input", ""))),
            errors=errors,
            status=status,
        )


def _without_keys(data: Any) -> Any:
    """The POST data without any key field: nothing in the form can echo a key back."""
    copy = data.copy()
    for name in list(copy):
        if name.startswith(KEY_FIELD_PREFIX):
            del copy[name]
    return copy


def _sentence(text: str) -> str:
    """A service message as this form's sentence: the API's field name becomes the form's."""
    return sentence(text.replace("only in provider_keys", "only in the key fields"))


class RunCancelView(RunPageView):
    """GET: what cancelling the run does, and a button. POST: `run_cancel` (as
    POST /api/v1/runs/<id>/cancel/), then the run page."""

    allowed_roles = RUN_WRITE_ROLES

    def get(self, request: HttpRequest, tenant_slug: str, run_id: str) -> HttpResponse:
        run = self.tenant_run(request, run_id, include_content=False)
        return self.page("runs/run_cancel.html", run=run, finished=run.status in FINISHED)

    def post(self, request: HttpRequest, tenant_slug: str, run_id: str) -> HttpResponse:
        run: Run = self.tenant_run(request, run_id, include_content=False)
        try:
            run = run_cancel(run=run, actor=self.actor, request=request)
        except RunFinished:
            messages.error(
                request, f"The run had already ended ({run.get_status_display().lower()})."
            )
        else:
            if run.status in FINISHED:
                messages.success(
                    request, "Run cancelled. Its stored keys were deleted from the key store."
                )
            else:
                messages.success(
                    request,
                    "Cancellation requested. The run stops before its next step and its key is "
                    "dropped then.",
                )
        return HttpResponseRedirect(
            reverse("runs:run-detail", kwargs={"tenant_slug": self.tenant.slug, "run_id": run.pk})
        )
