"""A run's long values (input, prompt templates, outputs, error bodies) on pages: clipped to a
readable length, each whole one downloadable on its own.

Every value is redacted here, on the page and in the download alike: stored outputs and error
bodies already are, and a run's input or a prompt template gets the same masking of anything
shaped like a provider key.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from runs.models import Run, StepRun
from swrly.keys.redaction import redact

# What a page shows of one value at most: a 900 KB input stays a short page.
PAGE_CHARS = 5_000
PAGE_LINES = 100
# A step's error in the steps table and the run's error message: shorter still.
CELL_CHARS = 500
CELL_LINES = 10

# The parts of a run that can be downloaded whole. "input", "error" (the run's error message),
# and "step-<position>-<field>" for a step's output, error, prompt and system prompt.
PART = re.compile(r"^(?:(input|error)|step-(\d{1,4})-(output|error|prompt|system))$")
# Hidden from auditors, as the API hides them: the input, the prompts and the outputs.
CONTENT_FIELDS = frozenset({"input", "output", "prompt", "system"})


@dataclass(frozen=True)
class Clipped:
    """The start of a value and how long the whole is, in characters."""

    text: str
    total: int
    part: str

    @property
    def shown(self) -> int:
        return len(self.text)

    @property
    def truncated(self) -> bool:
        return self.shown < self.total

    @property
    def shown_label(self) -> str:
        return f"{self.shown:,}"

    @property
    def total_label(self) -> str:
        return f"{self.total:,}"


def clip(text: str, *, part: str, chars: int = PAGE_CHARS, lines: int = PAGE_LINES) -> Clipped:
    """At most `chars` characters and `lines` lines of `text` (already redacted)."""
    head = text[:chars]
    cut = -1
    for _ in range(lines):
        cut = head.find("\n", cut + 1)
        if cut < 0:
            break
    if cut >= 0:
        head = head[:cut]
    return Clipped(text=head, total=len(text), part=part)


def input_text(run: Run) -> str:
    """The run's input as the page shows it: indented JSON, redacted."""
    return redact(json.dumps(run.input, indent=2, sort_keys=True, ensure_ascii=False))


@dataclass(frozen=True)
class Part:
    """One downloadable value of a run: `field` of the run or of the step at `position`."""

    field: str
    position: int | None = None

    @property
    def is_content(self) -> bool:
        return self.field in CONTENT_FIELDS

    @property
    def name(self) -> str:
        return self.field if self.position is None else f"step-{self.position}-{self.field}"


def parse_part(value: str) -> Part | None:
    """The part a download URL names, or None for anything else."""
    match = PART.match(value)
    if match is None:
        return None
    if match.group(1):
        return Part(field=match.group(1))
    return Part(field=match.group(3), position=int(match.group(2)))


def part_text(*, run: Run, steps: list[StepRun], part: Part) -> str | None:
    """The whole redacted value `part` names, or None when the run has no such step.

    Content parts need `run` and `steps` loaded with their content (the caller checks the role).
    """
    if part.position is None:
        return input_text(run) if part.field == "input" else redact(run.error_message)
    step = next((s for s in steps if s.position == part.position), None)
    if step is None:
        return None
    if part.field == "output":
        return redact(step.output_text)
    if part.field == "error":
        return redact(step.error)
    definitions: list[dict[str, Any]] = run.steps or []
    if part.position >= len(definitions):
        return None
    return redact(str(definitions[part.position].get(part.field) or ""))
