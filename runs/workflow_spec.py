"""The shape of a workflow's steps, and their prompt templates.

A step is a dict whose fields STEP_FIELDS declares (types, limits, defaults, messages):

    {"name": "summarize", "provider": "anthropic", "model": "claude-…",
     "system": "optional", "prompt": "Summarize {{ input.text }}",
     "max_tokens": 1024, "temperature": 0.2, "stream": false}

Templates know two kinds of reference, and nothing else: `{{ input.a.b }}` (a value from the
run's input) and `{{ steps.NAME.output }}` (the output of an earlier step). Rendering is a single
substitution pass with no code execution: a value that itself contains `{{ … }}` stays literal.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from swrly.providers import PROVIDER_NAMES
from tenants.policy import ProviderPolicy

MAX_STEPS = 20
_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


# --- The step's fields: one declaration that validates steps and describes them in OpenAPI ---
# (runs.api.serializers builds the schema's `Step` from STEP_FIELDS.)


@dataclass(frozen=True, kw_only=True)
class StepField:
    """One field of a step. A field that is absent takes `default` unless it is `required`."""

    name: str
    required: bool = True
    default: Any = None
    help_text: str = ""

    def fits(self, value: Any) -> bool:
        raise NotImplementedError

    @property
    def message(self) -> str:
        """What a value that does not fit is told."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Text(StepField):
    min_length: int
    max_length: int
    pattern: str | None = None  # the whole value must match
    noun: str = "text"
    pattern_message: str = ""  # the message when there is a pattern
    unique: bool = False  # no earlier step has the same value
    templated: bool = False  # {{ … }} references are checked

    def fits(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and self.min_length <= len(value) <= self.max_length
            and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)
        )

    @property
    def message(self) -> str:
        if self.pattern:
            return self.pattern_message
        return f"{self.noun} of {self.min_length} to {self.max_length} characters"


@dataclass(frozen=True, kw_only=True)
class Choice(StepField):
    choices: tuple[str, ...]

    def fits(self, value: Any) -> bool:
        return value in self.choices

    @property
    def message(self) -> str:
        return f"must be one of {', '.join(self.choices)}"


def _is_number(value: Any, kinds: type | tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, kinds)  # bool is not a number


@dataclass(frozen=True, kw_only=True)
class Integer(StepField):
    minimum: int
    maximum: int

    def fits(self, value: Any) -> bool:
        return _is_number(value, int) and self.minimum <= value <= self.maximum

    @property
    def message(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"


@dataclass(frozen=True, kw_only=True)
class Number(StepField):
    minimum: int
    maximum: int
    nullable: bool = False

    def fits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        return _is_number(value, (int, float)) and self.minimum <= value <= self.maximum

    @property
    def message(self) -> str:
        return f"a number from {self.minimum} to {self.maximum}" + (
            ", or null" if self.nullable else ""
        )


@dataclass(frozen=True, kw_only=True)
class Boolean(StepField):
    def fits(self, value: Any) -> bool:
        return isinstance(value, bool)

    @property
    def message(self) -> str:
        return "true or false"


STEP_FIELDS: tuple[StepField, ...] = (
    Text(
        name="name",
        min_length=1,
        max_length=63,
        pattern=r"[a-z][a-z0-9_]{0,62}",
        pattern_message="lower-case letters, digits and _, starting with a letter",
        unique=True,
        help_text="Unique within the workflow; later steps use {{ steps.NAME.output }}.",
    ),
    Choice(name="provider", choices=PROVIDER_NAMES),
    Text(name="model", min_length=1, max_length=200, noun="a model name"),
    Text(
        name="system", required=False, default="", min_length=0, max_length=20_000, templated=True
    ),
    Text(name="prompt", min_length=1, max_length=50_000, templated=True),
    Integer(name="max_tokens", required=False, default=1024, minimum=1, maximum=100_000),
    Number(
        name="temperature",
        required=False,
        default=None,
        minimum=0,
        maximum=2,
        nullable=True,
        help_text="Sent to OpenAI-protocol providers only.",
    ),
    Boolean(
        name="stream",
        required=False,
        default=False,
        help_text=(
            "Ask the provider to stream its answer: the run shows the step's output, redacted, "
            "while it arrives, and records the time to its first token."
        ),
    ),
)
FIELD_NAMES = frozenset(field.name for field in STEP_FIELDS)


class SpecError(ValueError):
    """A workflow or an input that does not fit; `errors` maps a field path to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def references(template: str) -> Iterator[tuple[str, ...]]:
    """Each `{{ … }}` reference of a template, as a path tuple; ValueError for a bad one."""
    for match in _REFERENCE.finditer(template):
        path = match.group(1)
        if not _PATH.fullmatch(path):
            raise ValueError(f"'{{{{ {path} }}}}' is not a reference")
        yield tuple(path.split("."))
    stripped = _REFERENCE.sub("", template)
    if "{{" in stripped or "}}" in stripped:
        raise ValueError("has an unclosed '{{' or a stray '}}'")


def _check_reference(path: tuple[str, ...], earlier: list[str]) -> str | None:
    if path[0] == "input":
        return None if len(path) >= 2 else "'input' needs a field: {{ input.NAME }}"
    if path[0] == "steps":
        if len(path) != 3 or path[2] != "output":
            return "a step reference is {{ steps.NAME.output }}"
        if path[1] not in earlier:
            return f"'steps.{path[1]}' is not an earlier step"
        return None
    return f"unknown reference '{'.'.join(path)}' (use input.… or steps.NAME.output)"


def validate_steps(steps: Any) -> list[dict]:
    """The steps, normalized; SpecError naming each step and field that is wrong."""
    if not isinstance(steps, list) or not steps:
        raise SpecError({"steps": ["a workflow needs a list of 1 or more steps"]})
    if len(steps) > MAX_STEPS:
        raise SpecError({"steps": [f"at most {MAX_STEPS} steps"]})
    errors: dict[str, list[str]] = {}
    normalized: list[dict] = []
    names: list[str] = []
    for index, step in enumerate(steps):
        where = f"steps[{index}]"
        if not isinstance(step, dict):
            errors[where] = ["a step is an object"]
            continue
        problems = _step_problems(step, names)
        for field, message in problems:
            errors.setdefault(f"{where}.{field}", []).append(message)
        if not problems:
            normalized.append({f.name: step.get(f.name, f.default) for f in STEP_FIELDS})
        if isinstance(step.get("name"), str):
            names.append(step["name"])
    if errors:
        raise SpecError(errors)
    return normalized


def _step_problems(step: dict, earlier: list[str]) -> list[tuple[str, str]]:
    """(field, message) for each problem of one step, unknown and missing fields first."""
    problems = [(name, "unknown field") for name in sorted(set(step) - FIELD_NAMES)]
    problems += [(f.name, "is required") for f in STEP_FIELDS if f.required and f.name not in step]
    for field in STEP_FIELDS:
        if field.name in step:
            problems += [(field.name, m) for m in _value_problems(field, step[field.name], earlier)]
    return problems


def _value_problems(field: StepField, value: Any, earlier: list[str]) -> list[str]:
    if not field.fits(value):
        return [field.message]
    if isinstance(field, Text) and field.unique and value in earlier:
        return [f"'{value}' is used by an earlier step"]
    if isinstance(field, Text) and field.templated:
        return _template_problems(value, earlier)
    return []


def _template_problems(template: str, earlier: list[str]) -> list[str]:
    problems = []
    try:
        for path in references(template):
            if problem := _check_reference(path, earlier):
                problems.append(problem)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            raise KeyError(".".join(path))
        data = data[part]
    return data


def validate_input(steps: list[dict], run_input: Any) -> None:
    """SpecError naming each step whose templates use an input field the run does not give."""
    if not isinstance(run_input, dict):
        raise SpecError({"input": ["the input is a JSON object"]})
    errors: dict[str, list[str]] = {}
    for index, step in enumerate(steps):
        for field in ("system", "prompt"):
            for path in references(step[field]):
                if path[0] != "input":
                    continue
                try:
                    _lookup(run_input, path[1:])
                except KeyError:
                    errors.setdefault("input", []).append(
                        f"steps[{index}] ({step['name']}) {field} uses {{{{ {'.'.join(path)} }}}}, "
                        "which the input does not have"
                    )
    if errors:
        raise SpecError(errors)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def render(template: str, *, run_input: dict, outputs: dict[str, str]) -> str:
    """The template with each reference replaced, in one pass (values are not re-scanned)."""

    def substitute(match: re.Match) -> str:
        path = tuple(match.group(1).split("."))
        if path[0] == "input":
            return _text(_lookup(run_input, path[1:]))
        return outputs[path[1]]

    return _REFERENCE.sub(substitute, template)


def policy_problems(steps: list[dict], policy: ProviderPolicy) -> dict[str, list[str]]:
    """What the tenant's provider policy refuses in these (valid) steps, by `steps[i].field`,
    as validate_steps names its problems. Empty when the policy allows every step."""
    errors: dict[str, list[str]] = {}
    for index, step in enumerate(steps):
        provider, model = step.get("provider"), step.get("model")
        if not isinstance(provider, str):
            continue
        if problem := policy.provider_problem(provider):
            errors[f"steps[{index}].provider"] = [problem]
        elif isinstance(model, str) and (problem := policy.model_problem(provider, model)):
            errors[f"steps[{index}].model"] = [problem]
    return errors


def check_policy(steps: list[dict], policy: ProviderPolicy) -> None:
    """SpecError naming each step and field the tenant's policy refuses."""
    if errors := policy_problems(steps, policy):
        raise SpecError(errors)


@dataclass(frozen=True)
class StepPreview:
    """One step's templates rendered for a sample input (no provider is called)."""

    position: int
    name: str
    system: str
    prompt: str


def earlier_output_placeholder(position: int, name: str) -> str:
    """What a preview shows where a later step uses this step's output (it does not exist yet)."""
    return f"[output of steps[{position}] ({name})]"


def preview(steps: list[dict], run_input: Any) -> list[StepPreview]:
    """Each step's system prompt and prompt as a run with `run_input` would send them.

    The run's own checks and rendering: validate_input (SpecError with the API's messages) and
    render, as the executor calls it; an earlier step's output is a placeholder.
    """
    validate_input(steps, run_input)
    outputs: dict[str, str] = {}
    previews = []
    for position, step in enumerate(steps):
        previews.append(
            StepPreview(
                position=position,
                name=step["name"],
                system=render(step["system"], run_input=run_input, outputs=outputs),
                prompt=render(step["prompt"], run_input=run_input, outputs=outputs),
            )
        )
        outputs[step["name"]] = earlier_output_placeholder(position, step["name"])
    return previews


def input_skeleton(steps: list[dict]) -> dict:
    """A sample input with every `{{ input.… }}` path the steps use, each an empty string."""
    skeleton: dict = {}
    for step in steps:
        for field in ("system", "prompt"):
            for path in references(step.get(field) or ""):
                if path[0] != "input" or len(path) < 2:
                    continue
                node = skeleton
                for part in path[1:-1]:
                    child = node.get(part)
                    if not isinstance(child, dict):
                        child = node[part] = {}
                    node = child
                node.setdefault(path[-1], "")
    return skeleton
