import json
import re

import pytest

from runs.workflow_spec import (
    MAX_STEPS,
    STEP_FIELDS,
    SpecError,
    render,
    validate_input,
    validate_steps,
)
from swrly.providers import PROVIDER_NAMES


def _step(**overrides):
    return {"name": "first", "provider": "sandbox", "model": "m", "prompt": "hi", **overrides}


def test_a_valid_workflow_is_normalized():
    steps = validate_steps(
        [
            _step(),
            _step(name="second", prompt="Improve: {{ steps.first.output }} for {{ input.who }}"),
        ]
    )
    assert steps[0] == {
        "name": "first",
        "provider": "sandbox",
        "model": "m",
        "system": "",
        "prompt": "hi",
        "max_tokens": 1024,
        "temperature": None,
        "stream": False,
    }


@pytest.mark.parametrize(
    ("steps", "field", "message"),
    [
        ([], "steps", "1 or more"),
        (
            [_step(prompt="{{ steps.later.output }}"), _step(name="later")],
            "steps[0].prompt",
            "not an earlier step",
        ),
        ([_step(prompt="{{ secrets.key }}")], "steps[0].prompt", "unknown reference"),
        ([_step(prompt="{{ input }}")], "steps[0].prompt", "needs a field"),
        ([_step(prompt="{{ __import__('os') }}")], "steps[0].prompt", "not a reference"),
        ([_step(prompt="{{ input.x ")], "steps[0].prompt", "unclosed"),
        ([_step(provider="gemini")], "steps[0].provider", "must be one of"),
        ([{"name": "x", "provider": "sandbox"}], "steps[0].model", "required"),
        ([_step(base_url="https://evil.example")], "steps[0].base_url", "unknown field"),
        ([_step(), _step()], "steps[1].name", "earlier step"),
        ([_step(max_tokens=0)], "steps[0].max_tokens", "integer"),
        ([_step(temperature=3)], "steps[0].temperature", "0 to 2"),
        ([_step(name="Bad Name")], "steps[0].name", "lower-case"),
        ([_step(stream="yes")], "steps[0].stream", "true or false"),
        ([_step(stream=1)], "steps[0].stream", "true or false"),  # 1 is not a boolean
    ],
)
def test_invalid_steps_name_the_step_and_the_reason(steps, field, message):
    with pytest.raises(SpecError) as caught:
        validate_steps(steps)
    assert field in caught.value.errors
    assert message in " ".join(caught.value.errors[field])


def test_input_must_provide_every_referenced_field():
    steps = validate_steps([_step(prompt="{{ input.doc.title }} by {{ input.author }}")])
    validate_input(steps, {"doc": {"title": "T"}, "author": "A"})
    with pytest.raises(SpecError) as caught:
        validate_input(steps, {"doc": {}})
    text = " ".join(caught.value.errors["input"])
    assert "input.doc.title" in text
    assert "input.author" in text
    assert "steps[0] (first)" in text


def test_rendering_substitutes_once_and_runs_no_code():
    rendered = render(
        "Q: {{ input.q }} / prev: {{ steps.first.output }} / n: {{ input.n }}",
        run_input={"q": "{{ input.secret }}", "n": {"a": 1}, "secret": "nope"},
        outputs={"first": "{{ steps.first.output }}"},
    )
    assert rendered == 'Q: {{ input.secret }} / prev: {{ steps.first.output }} / n: {"a": 1}'


def test_the_openapi_step_is_the_step_that_is_validated(client, db):
    # given the schema the API serves
    response = client.get("/api/v1/schema/", headers={"Accept": "application/json"})
    schema = json.loads(response.content)
    # then the step a request sends is the validated step: the same fields, required ones,
    # limits and providers
    step = schema["components"]["schemas"]["StepRequest"]
    assert list(step["properties"]) == [field.name for field in STEP_FIELDS]
    assert sorted(step["required"]) == sorted(f.name for f in STEP_FIELDS if f.required)
    # and the step an answer holds has the same fields, its prompts optional (not for auditors)
    answered = schema["components"]["schemas"]["Step"]
    assert list(answered["properties"]) == list(step["properties"])
    assert sorted(answered["required"]) == sorted(
        f.name for f in STEP_FIELDS if f.required and f.name not in ("system", "prompt")
    )
    provider = step["properties"]["provider"]
    if "$ref" in provider:  # an enum is a component of its own
        provider = schema["components"]["schemas"][provider["$ref"].rsplit("/", 1)[1]]
    assert provider["enum"] == list(PROVIDER_NAMES)
    assert step["properties"]["model"]["maxLength"] == 200
    assert step["properties"]["max_tokens"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100000,
        "default": 1024,
    }
    steps = schema["components"]["schemas"]["WorkflowRequest"]["properties"]["steps"]
    assert (steps["minItems"], steps["maxItems"]) == (1, MAX_STEPS)
    # and a name the pattern refuses is one validation refuses
    pattern = step["properties"]["name"]["pattern"]
    for name in ("first", "a" * 63, "Bad Name", "a" * 64, "_x"):
        fits = re.fullmatch(pattern.strip("^$"), name) is not None
        try:
            validate_steps([_step(name=name)])
            valid = True
        except SpecError:
            valid = False
        assert fits == valid, name
