"""The audit event registry: one declaration per action, enforced by the writer, read by the
filters, the run timeline and the docs."""

import ast
import re
from pathlib import Path

import pytest

from swrly.audit.events import (
    EVENT_TYPES,
    UnknownAuditEvent,
    action_filter_choices,
    event_type,
    vocabulary_table,
)
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record, audit_record_bounded
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs" / "architecture.md"
GENERATED = re.compile(
    r"<!-- generated from swrly/audit/events\.py[^\n]*-->\n(?P<table>.*?)"
    r"<!-- end of generated table -->",
    re.S,
)
SYSTEM = Actor.system("tests")


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(slug="registry", name="Registry")


def test_every_action_is_declared_once():
    actions = [event.action for event in EVENT_TYPES]
    assert len(actions) == len(set(actions))
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", action) for action in actions)


@pytest.mark.parametrize("write", [audit_record, audit_record_bounded])
def test_an_undeclared_action_is_refused_before_anything_is_written(tenant, write):
    with pytest.raises(UnknownAuditEvent, match="not declared"):
        write(tenant=tenant, action="key.teleported", actor=SYSTEM)
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("write", [audit_record, audit_record_bounded])
def test_an_undeclared_metadata_key_is_refused(tenant, write):
    with pytest.raises(UnknownAuditEvent, match="'colour'"):
        write(tenant=tenant, action="member.removed", actor=SYSTEM, metadata={"colour": "red"})
    assert not AuditEvent.objects.exists()


def test_declared_metadata_is_written(tenant):
    event = audit_record(
        tenant=tenant, action="member.removed", actor=SYSTEM, metadata={"role": "admin"}
    )
    assert event_type(event.action).metadata == ("role",)


# Modules that name actions without writing them: the registry, the summaries, the metrics'
# labels and the readers (timeline, dashboard, filters).
_READERS = {
    "swrly/audit/events.py",
    "swrly/audit/summary.py",
    "swrly/metrics.py",
    "swrly/custody/selectors.py",
    "runs/views.py",
    "tenants/filters.py",
}


def _actions_named_by_writers() -> set[str]:
    """Every string constant of the runtime code outside the readers: an action a code path
    passes to the audit writer is among them (directly or through a variable)."""
    names: set[str] = set()
    for package in ("swrly", "tenants", "runs"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or relative.startswith("swrly/dev/"):
                continue
            if relative in _READERS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)
    return names


def test_every_offered_action_is_one_some_code_path_writes():
    from runs.views import KEY_EVENT_SERIES

    written = _actions_named_by_writers()
    choices = action_filter_choices()
    declared = {event.action for event in EVENT_TYPES}
    assert {c for c in choices if not c.endswith(".*")} == declared
    assert {"key.*", "run.*", "auth.*", "audit.*"} <= set(choices)
    offered = declared | {action for action, _ in KEY_EVENT_SERIES}
    assert offered - written == set(), "offered, but no code path writes it"
    # the dashboard's key series: the steps of a key's life, rewraps by rotations included
    assert "key.rewrapped" in {action for action, _ in KEY_EVENT_SERIES}


def test_the_docs_vocabulary_table_is_generated_from_the_registry():
    match = GENERATED.search(DOCS.read_text())
    assert match, "docs/architecture.md lost its generated vocabulary table markers"
    assert match["table"] == vocabulary_table(), (
        "docs/architecture.md is stale: paste swrly.audit.events.vocabulary_table() between "
        "the markers"
    )


def _app_imports(path: Path) -> list[str]:
    """Imports of an app module (tenants, runs) outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [n for n in names if n.split(".")[0] in {"tenants", "runs"}]
    return found


def test_the_audit_app_imports_no_app():
    modules = sorted((ROOT / "swrly" / "audit").rglob("*.py"))
    assert modules
    offenders = {str(p.relative_to(ROOT)): _app_imports(p) for p in modules}
    assert not {p: names for p, names in offenders.items() if names}
