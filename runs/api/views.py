"""Workflows and runs over the API. The tenant comes from the token (TenantViewSet)."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from runs.api.serializers import (
    RunFilterSerializer,
    RunListSerializer,
    RunSerializer,
    WorkflowSerializer,
)
from runs.models import Run, Workflow
from runs.services import (
    RunFinished,
    run_cancel,
    run_create,
    workflow_create,
    workflow_delete,
    workflow_update,
)
from runs.workflow_spec import SpecError
from swrly import keys
from tenants.access import get_for_tenant
from tenants.api.base import TenantViewSet
from tenants.api.pagination import NewestFirstPagination


class KeyStoreUnavailableError(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "key_store_unavailable"
    default_detail = "The key store is unavailable; no run was created. Retry later."


class RunConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "run_finished"


def _spec_error(exc: SpecError) -> ValidationError:
    return ValidationError(exc.errors)


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
    pagination_class = NewestFirstPagination
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer: WorkflowSerializer) -> None:
        serializer.instance = workflow_create(
            tenant=self.tenant, actor=self.actor, request=self.request, **serializer.validated_data
        )

    def perform_update(self, serializer: WorkflowSerializer) -> None:
        serializer.instance = workflow_update(
            workflow=serializer.instance,
            changes=serializer.validated_data,
            actor=self.actor,
            request=self.request,
        )

    def perform_destroy(self, instance: Workflow) -> None:
        workflow_delete(workflow=instance, actor=self.actor, request=self.request)


class RunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TenantViewSet
):
    """Runs of the token's tenant. Developers and up trigger and cancel; everyone reads."""

    model = Run
    serializer_class = RunSerializer
    pagination_class = NewestFirstPagination

    def get_serializer_class(self) -> type:
        return RunListSerializer if self.action == "list" else RunSerializer

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        if self.action == "list":
            filters = RunFilterSerializer(data=self.request.query_params)
            filters.is_valid(raise_exception=True)
            given = filters.validated_data
            if "status" in given:
                queryset = queryset.filter(status=given["status"])
            if "workflow" in given:
                queryset = queryset.filter(workflow_id=given["workflow"])
            if "created_after" in given:
                queryset = queryset.filter(created_at__gte=given["created_after"])
            if "created_before" in given:
                queryset = queryset.filter(created_at__lt=given["created_before"])
            return queryset
        return queryset.prefetch_related("step_runs")

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status", str, enum=[c for c, _ in Run._meta.get_field("status").choices]
            ),
            OpenApiParameter("workflow", str),
            OpenApiParameter("created_after", str),
            OpenApiParameter("created_before", str),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={202: RunSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        provider_keys = serializer.validated_data["provider_keys"]
        try:
            workflow = get_for_tenant(
                Workflow,
                tenant=self.tenant,
                pk=serializer.validated_data["workflow_id"],
                actor=self.actor,
                request=request,
            )
            run = run_create(
                tenant=self.tenant,
                workflow=workflow,
                run_input=serializer.validated_data.get("input", {}),
                provider_keys=provider_keys,
                actor=self.actor,
                request=request,
            )
        except SpecError as exc:
            raise _spec_error(exc) from None
        except keys.KeyStoreUnavailable:
            raise KeyStoreUnavailableError from None
        finally:
            for secret in provider_keys.values():
                secret.discard()
        return Response(RunSerializer(run, context=self.get_serializer_context()).data, status=202)

    @extend_schema(request=None, responses={202: RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        try:
            run = run_cancel(run=self.get_object(), actor=self.actor, request=request)
        except RunFinished as exc:
            raise RunConflict(exc.messages[0]) from None
        return Response(RunSerializer(run, context=self.get_serializer_context()).data, status=202)
