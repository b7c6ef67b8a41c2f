"""Workflows and runs over the API. The tenant comes from the token (TenantViewSet)."""

from typing import Any

from django.views.decorators.debug import sensitive_variables
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from runs.api.serializers import (
    RunCreateSerializer,
    RunListSerializer,
    RunSerializer,
    RunTimelineSerializer,
    WorkflowSerializer,
)
from runs.fairness import QueueFull
from runs.filters import RunFilterSet
from runs.models import Run, Workflow
from runs.services import (
    IdempotencyConflict,
    KeyBlocked,
    RunFinished,
    run_cancel,
    run_trigger,
    workflow_create,
    workflow_delete,
    workflow_update,
)
from runs.workflow_spec import SpecError
from swrly import keys, metrics
from swrly.custody.selectors import run_history
from swrly.web.pagination import KeysetPagination
from tenants.access import get_for_tenant
from tenants.api.base import TenantViewSet


class KeyStoreUnavailableError(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "key_store_unavailable"
    default_detail = "The key store is unavailable; no run was created. Retry later."


class IdempotencyConflictError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_conflict"


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise ValidationError(
            {"Idempotency-Key": ["1 to 255 printable ASCII characters without spaces"]}
        )
    return value


class KeyBlockedError(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "key_blocked"


class QueueFullError(APIException):
    """429 `run_queue_full`, with Retry-After (DRF's handler writes it from `wait`)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "run_queue_full"

    def __init__(self, exc: QueueFull) -> None:
        super().__init__(str(exc))
        self.wait = exc.retry_after


class RunConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "run_finished"


def _spec_error(exc: SpecError) -> ValidationError:
    return ValidationError(exc.errors)


def _steps_error(exc: SpecError) -> ValidationError:
    """A workflow's step problems under `steps`, each `steps[i].field: message`, as StepsField
    words the problems it finds."""
    return ValidationError(
        {"steps": [f"{field}: {'; '.join(messages)}" for field, messages in exc.errors.items()]}
    )


class WorkflowViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """Workflows of the token's tenant. Developers and up write; everyone reads."""

    model = Workflow
    serializer_class = WorkflowSerializer
    pagination_class = KeysetPagination
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer: WorkflowSerializer) -> None:
        try:
            serializer.instance = workflow_create(
                tenant=self.tenant,
                actor=self.actor,
                request=self.request,
                **serializer.validated_data,
            )
        except SpecError as exc:  # the tenant's policy: named under `steps` like the others
            raise _steps_error(exc) from None

    def perform_update(self, serializer: WorkflowSerializer) -> None:
        try:
            serializer.instance = workflow_update(
                workflow=serializer.instance,
                changes=serializer.validated_data,
                actor=self.actor,
                request=self.request,
            )
        except SpecError as exc:
            raise _steps_error(exc) from None

    def perform_destroy(self, instance: Workflow) -> None:
        workflow_delete(workflow=instance, actor=self.actor, request=self.request)


class RunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TenantViewSet
):
    """Runs of the token's tenant. Developers and up trigger and cancel; everyone reads."""

    model = Run
    serializer_class = RunSerializer
    pagination_class = KeysetPagination
    filterset_class = RunFilterSet
    extra_error_codes = {"create": ["409", "503"], "cancel": ["409"]}
    error_descriptions = {
        "create": {
            "429": "Too many requests (`throttled`), or the tenant already has its limit of runs "
            "waiting for a worker (`run_queue_full`; nothing was deposited); see Retry-After."
        }
    }

    def get_serializer_class(self) -> type:
        if self.action in ("create", "metadata") and self.request.method == "POST":
            # what a request sends (OPTIONS describes POST with it too); answers are RunSerializer
            return RunCreateSerializer
        return RunListSerializer if self.action == "list" else RunSerializer

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset if self.action == "list" else queryset.prefetch_related("step_runs")

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retrying with the same key returns the first run (for 24 h) and "
                "deposits nothing again; the same key with a different request is a 409.",
            )
        ],
        request=RunCreateSerializer,
        responses={202: RunSerializer},
    )
    # The keys arrive here: neither the serializer (its repr shows the request data) nor the
    # keys appear in an error report's frames, even before redaction by value.
    @sensitive_variables("serializer", "provider_keys", "secret")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        idempotency_key = _idempotency_key(request)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        provider_keys = serializer.validated_data["provider_keys"]
        run_input = serializer.validated_data.get("input", {})
        try:
            workflow = get_for_tenant(
                Workflow,
                tenant=self.tenant,
                pk=serializer.validated_data["workflow_id"],
                actor=self.actor,
                request=request,
            )
            run, replayed = run_trigger(
                tenant=self.tenant,
                workflow=workflow,
                run_input=run_input,
                provider_keys=provider_keys,
                actor=self.actor,
                request=request,
                idempotency_key=idempotency_key,
            )
        except SpecError as exc:
            raise _spec_error(exc) from None
        except IdempotencyConflict as exc:
            raise IdempotencyConflictError(exc.messages[0]) from None
        except KeyBlocked as exc:
            raise KeyBlockedError(str(exc)) from None
        except keys.KeyStoreUnavailable:
            raise KeyStoreUnavailableError from None
        except QueueFull as exc:
            metrics.run_refused("queue_full")
            raise QueueFullError(exc) from None
        finally:
            for secret in provider_keys.values():
                secret.discard()
        response = Response(
            RunSerializer(run, context=self.get_serializer_context()).data, status=202
        )
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(responses=RunTimelineSerializer)
    @action(detail=True, methods=["get"])
    def timeline(self, request: Request, pk: str | None = None) -> Response:
        """The key lifecycle of the run: per provider key, deposited → consumed → released."""
        run = self.get_object()
        history = run_history(tenant=self.tenant, run=run, step_providers=run.providers)
        return Response(RunTimelineSerializer(history).data)

    @extend_schema(request=None, responses={202: RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        try:
            run = run_cancel(run=self.get_object(), actor=self.actor, request=request)
        except RunFinished as exc:
            raise RunConflict(exc.messages[0]) from None
        return Response(RunSerializer(run, context=self.get_serializer_context()).data, status=202)
