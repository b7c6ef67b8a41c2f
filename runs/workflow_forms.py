"""The workflow editor's form: steps as HTML fields, validated by the API's own serializer.

The page posts each step's fields as `steps-<i>-<field>` (and `steps-count`); the editor's
buttons (`op`: add, remove-<i>, up-<i>, down-<i>) change the list on the server and render it
again, so the editor needs no script. Saving turns the fields into the JSON body the API takes
and validates it with WorkflowSerializer: the page's errors are the API's, word for word
(`steps[1].prompt: …`, steps numbered from 0), and nothing else decides what a valid
workflow is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, QueryDict

from runs.api.serializers import WorkflowSerializer
from runs.models import Workflow
from runs.workflow_spec import MAX_STEPS, STEP_FIELDS, Boolean, Integer, Number
from swrly.providers import PROVIDER_NAMES

FIELD_NAMES = [f.name for f in STEP_FIELDS]
_NUMERIC = {f.name: f for f in STEP_FIELDS if isinstance(f, Integer | Number)}
_CHECKBOXES = frozenset(f.name for f in STEP_FIELDS if isinstance(f, Boolean))
_CHECKED = "on"  # what a ticked checkbox posts
_STEP_MESSAGE = re.compile(r"^steps\[(\d+)\](?:\.(\w+))?: ")
_OP = re.compile(r"^(add|remove|up|down)(?:-(\d{1,2}))?$")
_MULTILINE = frozenset({"system", "prompt"})


def _number(text: str) -> Any:
    """A number field's text as the JSON value the API would get: a number if it reads as one.

    Text that is no number goes to the validation as it is, so it answers as the API does.
    """
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _field_text(value: Any) -> str:
    if isinstance(value, bool):
        return _CHECKED if value else ""  # a checkbox: ticked or not
    return "" if value is None else str(value)


@dataclass
class StepFields:
    """One step as the editor shows it: each field's text, and the API's messages for it."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)  # field ("" for the step) → messages

    @classmethod
    def from_step(cls, step: dict) -> StepFields:
        return cls({name: _field_text(step.get(name)) for name in FIELD_NAMES})

    @classmethod
    def blank(cls) -> StepFields:
        defaults = {f.name: _field_text(f.default) for f in STEP_FIELDS if not f.required}
        return cls({name: defaults.get(name, "") for name in FIELD_NAMES})

    def as_api(self) -> dict[str, Any]:
        """The step as a JSON body carries it: blank optional numbers left out (their default)."""
        step: dict[str, Any] = {}
        for name in FIELD_NAMES:
            text = self.values.get(name, "")
            if name in _NUMERIC:
                if text.strip():
                    step[name] = _number(text)
            elif name in _CHECKBOXES:
                step[name] = text == _CHECKED
            elif name == "provider":
                if text:
                    step[name] = text
            elif name in _MULTILINE:
                step[name] = text.replace("\r\n", "\n")
            else:
                step[name] = text
        return step


@dataclass
class WorkflowEditor:
    """The editor's state: name, description and steps as typed, and the API's messages."""

    name: str = ""
    description: str = ""
    steps: list[StepFields] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # every message, as the API lists them
    field_errors: dict[str, list[str]] = field(default_factory=dict)  # name, description

    max_steps = MAX_STEPS
    providers = PROVIDER_NAMES

    @classmethod
    def for_workflow(cls, workflow: Workflow, *, name: str | None = None) -> WorkflowEditor:
        return cls(
            name=workflow.name if name is None else name,
            description=workflow.description,
            steps=[StepFields.from_step(step) for step in workflow.steps],
        )

    @classmethod
    def new(cls) -> WorkflowEditor:
        return cls(steps=[StepFields.blank()])

    @classmethod
    def from_post(cls, data: QueryDict) -> WorkflowEditor:
        try:
            count = int(data.get("steps-count", "0"))
        except ValueError:
            count = 0
        # One more than the API allows, so that too many steps get the API's own message.
        count = max(0, min(count, MAX_STEPS + 1))
        steps = [
            StepFields({name: data.get(f"steps-{i}-{name}", "") for name in FIELD_NAMES})
            for i in range(count)
        ]
        return cls(name=data.get("name", ""), description=data.get("description", ""), steps=steps)

    @property
    def can_add(self) -> bool:
        return len(self.steps) < MAX_STEPS

    def apply(self, op: str) -> bool:
        """Add, remove or move a step (`op` from the editor's buttons); False if `op` is none."""
        match = _OP.fullmatch(op)
        if match is None:
            return False
        verb, index = match.group(1), match.group(2)
        if verb == "add":
            if self.can_add:
                self.steps.append(StepFields.blank())
            return True
        if index is None or not 0 <= int(index) < len(self.steps):
            return True
        i = int(index)
        if verb == "remove":
            del self.steps[i]
        elif verb == "up" and i > 0:
            self.steps[i - 1], self.steps[i] = self.steps[i], self.steps[i - 1]
        elif verb == "down" and i < len(self.steps) - 1:
            self.steps[i], self.steps[i + 1] = self.steps[i + 1], self.steps[i]
        return True

    def as_api(self) -> dict[str, Any]:
        """The JSON body a POST /api/v1/workflows/ with these values would carry."""
        return {
            "name": self.name,
            "description": self.description.replace("\r\n", "\n"),
            "steps": [step.as_api() for step in self.steps],
        }

    def validate(
        self, request: HttpRequest, *, workflow: Workflow | None = None
    ) -> dict[str, Any] | None:
        """The validated changes (all fields for a new workflow, the changed ones for an
        existing one), or None with the API's messages recorded on the editor."""
        body = self.as_api()
        if workflow is not None:
            body = {
                name: value
                for name, value in body.items()
                if name == "steps" or value != getattr(workflow, name)
            }
        serializer = WorkflowSerializer(
            instance=workflow, data=body, partial=workflow is not None, context={"request": request}
        )
        if serializer.is_valid():
            data = dict(serializer.validated_data)
            if workflow is not None and data.get("steps") == workflow.steps:
                del data["steps"]  # the same steps, once normalized: not a change
            return data
        self.record_errors(serializer.errors)
        return None

    def record_errors(self, errors: dict[str, Any]) -> None:
        """Keep the API's messages: listed in order, and each step's beside its field."""
        for name, messages in errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                text = str(message)
                if name != "steps":
                    self.field_errors.setdefault(name, []).append(text)
                    self.errors.append(f"{name}: {text}")
                    continue
                self.errors.append(text)
                found = _STEP_MESSAGE.match(text)
                if found and int(found.group(1)) < len(self.steps):
                    step = self.steps[int(found.group(1))]
                    step.errors.setdefault(found.group(2) or "", []).append(text)
