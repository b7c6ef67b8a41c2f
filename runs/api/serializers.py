"""Serializers for workflows and runs: keys are write-only; auditors see no prompts or outputs."""

from collections.abc import Mapping
from typing import Any

from django.core.validators import MaxLengthValidator, MinLengthValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs.models import Run, RunError, StepRun, Workflow
from runs.workflow_spec import (
    MAX_STEPS,
    STEP_FIELDS,
    Choice,
    Integer,
    Number,
    SpecError,
    StepField,
    Text,
    validate_steps,
)
from swrly.keys.secret import ProviderSecret
from swrly.web.serializers import StrictSerializerMixin
from tenants.models import Role

PROMPT_FIELDS = ("system", "prompt")


def _is_auditor(context: Mapping[str, Any]) -> bool:
    request = context.get("request")
    return request is not None and getattr(request.user, "role", None) == Role.AUDITOR


def visible_steps(steps: list[dict], *, role: str | None) -> list[dict]:
    """The steps as `role` may read them: auditors get no `system` or `prompt` (API and pages)."""
    if role == Role.AUDITOR:
        return [{k: v for k, v in step.items() if k not in PROMPT_FIELDS} for step in steps]
    return steps


def _schema_field(field: StepField) -> serializers.Field:
    """The DRF field that shows `field` in the OpenAPI schema (its limits, default and help)."""
    options: dict[str, Any] = {"help_text": field.help_text or None}
    if not field.required:
        options["default"] = field.default
    match field:
        case Text(pattern=str(pattern)):
            return serializers.RegexField(
                f"^{pattern}$", min_length=field.min_length, max_length=field.max_length, **options
            )
        case Text():
            return serializers.CharField(
                min_length=field.min_length or None,
                max_length=field.max_length,
                allow_blank=field.min_length == 0,
                trim_whitespace=False,
                **options,
            )
        case Choice():
            return serializers.ChoiceField(choices=list(field.choices), **options)
        case Integer():
            return serializers.IntegerField(
                min_value=field.minimum, max_value=field.maximum, **options
            )
        case Number():
            return serializers.FloatField(
                min_value=field.minimum,
                max_value=field.maximum,
                allow_null=field.nullable,
                **options,
            )
    raise TypeError(f"no schema for {type(field).__name__}")


# One workflow step in the OpenAPI schema, made from the declaration that validates steps
# (runs.workflow_spec.STEP_FIELDS): the schema cannot drift from the validation.
StepSerializer = type(
    "StepSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "One workflow step.",
        "__module__": __name__,
        **{field.name: _schema_field(field) for field in STEP_FIELDS},
    },
)


@extend_schema_field(StepSerializer(many=True))
class StepsField(serializers.JSONField):
    def __init__(self, **kwargs: Any) -> None:
        # The schema's minItems and maxItems; validate_steps has enforced both before they run.
        kwargs.setdefault("validators", [MinLengthValidator(1), MaxLengthValidator(MAX_STEPS)])
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[dict]:
        try:
            return validate_steps(data)
        except SpecError as exc:
            raise serializers.ValidationError(
                [f"{field}: {'; '.join(messages)}" for field, messages in exc.errors.items()]
            ) from None


class WorkflowSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    steps = StepsField()
    providers = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "steps",
            "providers",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "providers",
            "created_by",
            "updated_by",
            "created_at",
            "updated_at",
        ]

    def to_representation(self, instance: Workflow) -> dict:
        data = super().to_representation(instance)
        if _is_auditor(self.context):
            data["steps"] = visible_steps(data["steps"], role=Role.AUDITOR)
        return data


class ProviderKeysField(serializers.DictField):
    """`{"anthropic": "sk-ant-…"}` → `{"anthropic": ProviderSecret}`: held for redaction at once."""

    child = serializers.CharField(trim_whitespace=False, allow_blank=True)

    # More entries than providers are refused before any is held: every held value is searched
    # for in everything redacted while the request lasts.
    max_entries = 8

    def to_internal_value(self, data: Any) -> dict[str, ProviderSecret]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("an object of provider name to key")
        if len(data) > self.max_entries:
            raise serializers.ValidationError(f"at most {self.max_entries} provider keys")
        if not all(isinstance(v, str) and v for v in data.values()):
            raise serializers.ValidationError("every key is a non-empty string")
        return {str(name): ProviderSecret(value) for name, value in data.items()}


class StepRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepRun
        fields = [
            "position",
            "name",
            "provider",
            "model",
            "status",
            "provider_request_id",
            "destination_scheme",
            "destination_host",
            "destination_port",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "http_status",
            "attempts",
            "output_text",
            "error",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "destination_scheme": {
                "help_text": 'Where the step\'s requests went, with the key: the scheme ("https") '
                'of the operator\'s allow-listed base URL; "" when nothing was sent.'
            },
            "destination_host": {"help_text": 'The host of that URL; "" when nothing was sent.'},
            "destination_port": {
                "help_text": "Its port (443 for https unless the URL names another); null when "
                "nothing was sent."
            },
        }


class RunSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    # null once the workflow is deleted (the run keeps its workflow_name); a new run needs one.
    workflow = serializers.UUIDField(source="workflow_id", allow_null=True)
    input = serializers.JSONField(required=False, default=dict)
    provider_keys = ProviderKeysField(write_only=True)
    steps = StepRunSerializer(source="step_runs", many=True, read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "input",
            "provider_keys",
            "status",
            "error_code",
            "error_message",
            "triggered_by",
            "key_fingerprints",
            "cancel_requested_at",
            "created_at",
            "started_at",
            "finished_at",
            "steps",
        ]
        read_only_fields = [
            "cancel_requested_at",
            "id",
            "workflow_name",
            "status",
            "error_code",
            "error_message",
            "triggered_by",
            "key_fingerprints",
            "created_at",
            "started_at",
            "finished_at",
            "steps",
        ]

    error_code = serializers.ChoiceField(
        choices=RunError.choices,
        allow_blank=True,
        read_only=True,
        help_text='Why the run failed or was cancelled; "" while it has not (documented in '
        "docs/api.md, Run error codes).",
    )

    def validate_workflow(self, value: Any) -> Any:
        if value is None:
            raise serializers.ValidationError("This field may not be null.")
        return value

    def to_representation(self, instance: Run) -> dict:
        data = super().to_representation(instance)
        data["key_fingerprints"] = {
            provider: {"fingerprint": v["fingerprint"], "hint": v["hint"]}
            for provider, v in instance.key_fingerprints.items()
        }
        if _is_auditor(self.context):
            data.pop("input", None)
            for step in data.get("steps", []):
                step.pop("output_text", None)
        return data


class RunListSerializer(RunSerializer):
    """A run in a list: without its steps."""

    class Meta(RunSerializer.Meta):
        fields = [f for f in RunSerializer.Meta.fields if f != "steps"]


class TimelineDetailSerializer(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.JSONField()


class TimelineEntrySerializer(serializers.Serializer):
    kind = serializers.CharField(
        help_text="deposited, consumed, discarded, expired, missing, rejected, released, ended"
    )
    # A field named like Field.label: the serializer's metaclass moves it to _declared_fields.
    label = serializers.CharField()  # type: ignore[assignment]
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    seq = serializers.IntegerField(help_text="The audit event's sequence number.")
    details = TimelineDetailSerializer(many=True)


class KeyTimelineSerializer(serializers.Serializer):
    provider = serializers.CharField()
    hint = serializers.CharField(allow_blank=True)
    fingerprint = serializers.CharField(allow_blank=True)
    entries = TimelineEntrySerializer(many=True)


class RunTimelineSerializer(serializers.Serializer):
    keys = KeyTimelineSerializer(many=True)
    run_events = TimelineEntrySerializer(many=True)
