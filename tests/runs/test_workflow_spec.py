import pytest

from runs.workflow_spec import SpecError, render, validate_input, validate_steps


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
