"""The OpenAPI schema's error responses: every operation documents the errors it can answer.

All of them share one body, `{"error": {"code", "message", "fields"}}` (swrly/web/errors.py).
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. not_found, invalid, throttled.")
    message = serializers.CharField(help_text="For a person; never contains a secret.")
    # The body's `fields` key. (The metaclass takes declared fields out of the class, so the
    # Serializer.fields property is untouched; the stubs cannot know that.)
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Per-field problems of a request body (`provider_keys.openai`, `steps`, …).",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_DESCRIPTIONS = {
    "400": "The request is not valid; `fields` says where.",
    "401": "No API token, an unknown one, or a revoked one.",
    "403": "The API token's role does not allow this.",
    "404": "No such object in the API token's tenant (the same for another tenant's id).",
    "405": "Method not allowed.",
    "406": "Only JSON is served.",
    "409": "Conflicts with the object's state.",
    "413": "The request body is too large.",
    "415": "Send JSON (Content-Type: application/json).",
    "429": "Too many requests; see Retry-After.",
    "503": "The key store is unavailable; nothing was created.",
}


class SwrlyAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses each operation can give."""

    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "406", "429"]
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["400", "413", "415"]
        if "{" in self.path or self.method == "POST":
            codes.append("404")  # an unknown id, or (POST) a workflow not in the tenant
        if self.method == "GET" and "{" not in self.path:
            codes.append("400")  # bad filters or cursor
        view = self.view
        codes += list(getattr(view, "extra_error_codes", {}).get(getattr(view, "action", None), []))
        return sorted(set(codes))

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if getattr(self.view, "authentication_classes", None) == []:
            return responses  # the schema and the docs pages themselves
        # A view may say more about one of its actions' errors (e.g. a 429 of its own).
        descriptions = getattr(self.view, "error_descriptions", {})
        described = descriptions.get(getattr(self.view, "action", None), {})
        for code in self._error_codes():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = described.get(code, _DESCRIPTIONS[code])
                responses[code] = response
        return responses
