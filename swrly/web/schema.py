"""The OpenAPI schema as generated clients need it.

- Every operation documents the errors it can answer, all with one body,
  `{"error": {"code", "message", "fields"}}` (swrly/web/errors.py).
- Request and response bodies are separate components (COMPONENT_SPLIT_REQUEST in the
  settings): read-only fields only in responses, write-only ones (a run's keys) only in requests.
- A field a serializer removes for auditors (its `fields_omitted_for_auditors`) is optional in
  the response component, so a client parses an auditor's answer.
- An enum that admits `""` declares it among its values (`declare_blank_in_enums`), instead of
  drf-spectacular's `oneOf` [the enum, a separate BlankEnum].
"""

from typing import Any

from drf_spectacular.generators import SchemaGenerator
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
        if self.method == "DELETE":
            codes.append("400")  # refused by the object's state (revoked already, the last owner)
        view = self.view
        codes += list(getattr(view, "extra_error_codes", {}).get(getattr(view, "action", None), []))
        return sorted(set(codes))

    def _map_basic_serializer(
        self, serializer: serializers.BaseSerializer, direction: Direction
    ) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        omitted = getattr(serializer, "fields_omitted_for_auditors", ())
        if direction == "response" and omitted:
            schema["required"] = [
                name for name in schema.get("required", []) if name not in omitted
            ]
            if not schema["required"]:
                del schema["required"]
            for name in omitted:
                field = schema["properties"].get(name)
                if field is not None:
                    note = "Not shown to auditors."
                    field["description"] = f"{field.get('description', '')}\n\n{note}".strip()
        return schema

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


_BLANK_ENUM = "#/components/schemas/BlankEnum"


def declare_blank_in_enums(
    result: dict[str, Any], generator: SchemaGenerator, **kwargs: Any
) -> dict[str, Any]:
    """Put `""` into the enum of each field that may be blank (drf-spectacular's hook makes
    that `oneOf` [the enum, BlankEnum], which some generators turn into a union of two types).
    A field that may also be null keeps drf-spectacular's three-way `oneOf`; none does yet.

    Runs after drf-spectacular's `postprocess_schema_enums` (POSTPROCESSING_HOOKS). An enum
    that some field uses without the blank would change meaning: that is refused here.
    """
    schemas: dict[str, Any] = result.get("components", {}).get("schemas", {})
    blank_enums: set[str] = set()
    plain_refs: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        one_of = node.get("oneOf")
        if isinstance(one_of, list) and {"$ref": _BLANK_ENUM} in one_of and len(one_of) == 2:
            (other,) = (ref for ref in one_of if ref != {"$ref": _BLANK_ENUM})
            blank_enums.add(other["$ref"])
            del node["oneOf"]
            node["allOf"] = [other]  # a $ref beside other keys (readOnly, description)
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            plain_refs.add(ref)
        for value in node.values():
            visit(value)

    visit(result)
    for ref in blank_enums:
        if ref in plain_refs:
            raise ValueError(f"{ref} is used both with and without a blank value")
        enum = schemas[ref.rsplit("/", 1)[1]]
        enum["enum"] = ["", *enum["enum"]]
        if "description" in enum:
            enum["description"] = '* `""` - none\n' + enum["description"]
    if blank_enums and _BLANK_ENUM not in plain_refs:
        schemas.pop("BlankEnum", None)
    return result
