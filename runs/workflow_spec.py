"""The shape of a workflow's steps, and their prompt templates.

A step is a dict:

    {"name": "summarize", "provider": "anthropic", "model": "claude-…",
     "system": "optional", "prompt": "Summarize {{ input.text }}",
     "max_tokens": 1024, "temperature": 0.2}

Templates know two kinds of reference, and nothing else: `{{ input.a.b }}` (a value from the
run's input) and `{{ steps.NAME.output }}` (the output of an earlier step). Rendering is a single
substitution pass with no code execution: a value that itself contains `{{ … }}` stays literal.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

PROVIDERS = ("anthropic", "openai", "sandbox")
MAX_STEPS = 20
STEP_FIELDS = {"name", "provider", "model", "system", "prompt", "max_tokens", "temperature"}
REQUIRED_FIELDS = ("name", "provider", "model", "prompt")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


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
            normalized.append(
                {
                    "name": step["name"],
                    "provider": step["provider"],
                    "model": step["model"],
                    "system": step.get("system", ""),
                    "prompt": step["prompt"],
                    "max_tokens": step.get("max_tokens", 1024),
                    "temperature": step.get("temperature"),
                }
            )
        if isinstance(step.get("name"), str):
            names.append(step["name"])
    if errors:
        raise SpecError(errors)
    return normalized


def _step_problems(step: dict, earlier: list[str]) -> list[tuple[str, str]]:
    problems = [(field, "unknown field") for field in sorted(set(step) - STEP_FIELDS)]
    problems += [(field, "is required") for field in REQUIRED_FIELDS if field not in step]
    name = step.get("name")
    if "name" in step and not (isinstance(name, str) and _NAME.fullmatch(name)):
        problems.append(("name", "lower-case letters, digits and _, starting with a letter"))
    elif name in earlier:
        problems.append(("name", f"'{name}' is used by an earlier step"))
    if "provider" in step and step["provider"] not in PROVIDERS:
        problems.append(("provider", f"must be one of {', '.join(PROVIDERS)}"))
    model = step.get("model")
    if "model" in step and not (isinstance(model, str) and 0 < len(model) <= 200):
        problems.append(("model", "a model name of 1 to 200 characters"))
    for field, limit in (("system", 20_000), ("prompt", 50_000)):
        value = step.get(field)
        if field not in step:
            continue
        if not isinstance(value, str) or len(value) > limit or (field == "prompt" and not value):
            problems.append(
                (field, f"text of {'1' if field == 'prompt' else '0'} to {limit} characters")
            )
            continue
        try:
            for path in references(value):
                if problem := _check_reference(path, earlier):
                    problems.append((field, problem))
        except ValueError as exc:
            problems.append((field, str(exc)))
    max_tokens = step.get("max_tokens", 1024)
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= 100_000
    ):
        problems.append(("max_tokens", "an integer from 1 to 100000"))
    temperature = step.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        problems.append(("temperature", "a number from 0 to 2, or null"))
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
