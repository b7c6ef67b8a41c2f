"""Serializers for workflows and runs: keys are write-only; auditors see no prompts or outputs.

A run is written with RunCreateSerializer and read with RunSerializer: the key field exists only
in the first, the server's fields only in the second (two OpenAPI components, as a generated
client needs). Each serializer names the fields auditors do not get (`fields_omitted_for_auditors`);
the same tuple removes them and makes them optional in the OpenAPI response (swrly/web/schema.py).
"""

from collections.abc import Mapping
from typing import Any

from django.core.validators import MaxLengthValidator, MinLengthValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs.models import Run, RunError, StepRun, Workflow
from runs.workflow_spec import (
    MAX_STEPS,
    STEP_FIELDS,
    Boolean,
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


def _omit_for_auditors(serializer: serializers.BaseSerializer, data: dict) -> dict:
    """`data` without the serializer's `fields_omitted_for_auditors` when an auditor asks."""
    if _is_auditor(serializer.context):
        for name in getattr(serializer, "fields_omitted_for_auditors", ()):
            data.pop(name, None)
    return data


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
        case Boolean():
            return serializers.BooleanField(**options)
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
        "fields_omitted_for_auditors": PROMPT_FIELDS,
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
    fields_omitted_for_auditors = ("output_text",)

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
            "ttft_ms",
            "http_status",
            "attempts",
            "output_text",
            "error",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "output_text": {
                "allow_null": True,
                "help_text": "The answer, redacted; while a streamed step runs, what has arrived "
                "so far (its last, unfinished word held back); null once the content is purged.",
            },
            "ttft_ms": {
                "help_text": "A streamed step: milliseconds from sending the request that answered "
                "to the first text of the answer; null for a step that does not stream or has "
                "no text yet."
            },
            "error": {"allow_null": True, "help_text": "null once the content is purged."},
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

    def to_representation(self, instance: StepRun) -> dict:
        return _omit_for_auditors(self, super().to_representation(instance))


@extend_schema_field({"type": "object", "additionalProperties": {}})
class RunInputField(serializers.JSONField):
    """The run's input: a JSON object (the steps' templates read `{{ input.… }}` from it)."""


class RunCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    """A run to start: the workflow, its input and a key for each provider it uses."""

    workflow = serializers.UUIDField(source="workflow_id")
    input = RunInputField(required=False, default=dict)
    provider_keys = ProviderKeysField(
        help_text="Provider name to your key, for each provider the workflow uses. Sent once, "
        "never returned."
    )


class KeyFingerprintSerializer(serializers.Serializer):
    fingerprint = serializers.CharField(
        help_text="v2: and 64 hex characters, under the tenant's salt (a legacy v1 fingerprint "
        "is the 64 hex characters alone)."
    )
    hint = serializers.CharField(help_text="A short display hint of the key, e.g. sk-…abcd.")


class RunSerializer(serializers.ModelSerializer):
    """A run. Never its keys: only their fingerprints."""

    fields_omitted_for_auditors = ("input",)

    # null once the workflow is deleted (the run keeps its workflow_name).
    workflow = serializers.UUIDField(
        source="workflow_id",
        allow_null=True,
        read_only=True,
        help_text="null once the workflow is deleted; workflow_name stays.",
    )
    input = RunInputField(
        read_only=True, allow_null=True, help_text="null once the content is purged."
    )
    key_fingerprints = serializers.DictField(
        child=KeyFingerprintSerializer(),
        read_only=True,
        help_text="Per provider, the fingerprint and hint of the key the run was given.",
    )
    steps = StepRunSerializer(source="step_runs", many=True, read_only=True)
    content_purged_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the tenant's retention purged the run's content; `input`, "
        "`error_message` and each step's `output_text` and `error` are null from then on.",
    )
    error_message = serializers.CharField(
        read_only=True, allow_null=True, help_text="null once the content is purged."
    )
    error_code = serializers.ChoiceField(
        choices=RunError.choices,
        allow_blank=True,
        read_only=True,
        help_text='Why the run failed or was cancelled; "" while it has not (documented in '
        "docs/api.md, Run error codes).",
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "workflow_name",
            "input",
            "status",
            "error_code",
            "error_message",
            "triggered_by",
            "key_fingerprints",
            "cancel_requested_at",
            "created_at",
            "started_at",
            "finished_at",
            "content_purged_at",
            "steps",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Run) -> dict:
        data = super().to_representation(instance)
        if instance.content_purged_at is not None:
            # Purged by the tenant's retention (runs.retention): null, never an empty value.
            data["input"] = None
            data["error_message"] = None
            for step in data.get("steps", []):
                step["output_text"] = None
                step["error"] = None
        return _omit_for_auditors(self, data)


class RunListSerializer(RunSerializer):
    """A run in a list: without its steps."""

    class Meta(RunSerializer.Meta):
        fields = [f for f in RunSerializer.Meta.fields if f != "steps"]


class TimelineDetailSerializer(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.JSONField()


class TimelineEntrySerializer(serializers.Serializer):
    kind = serializers.CharField(
        help_text="deposited, rewrapped, consumed, discarded, expired, missing, rejected, "
        "released, ended"
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
