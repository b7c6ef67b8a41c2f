"""Structural rules that keep tenant scoping from depending on memory."""

import ast
import re
import tomllib
from pathlib import Path

import pytest
from django.apps import apps

from tenants.api.base import TenantViewSet
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parent.parent
# Modules that serve requests: they must reach tenant-owned rows only through tenants.access.
REQUEST_MODULES = sorted(
    path
    for app in ("*", "swrly/*")
    for path in [
        *ROOT.glob(f"{app}/views.py"),
        *ROOT.glob(f"{app}/pages.py"),
        *ROOT.glob(f"{app}/api/*.py"),
        *ROOT.glob(f"{app}/api.py"),
    ]
)


def _tenant_owned_models():
    return {
        model.__name__
        for model in apps.get_models()
        if any(f.name == "tenant" and f.related_model is Tenant for f in model._meta.fields)
    }


@pytest.mark.parametrize("path", REQUEST_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_request_modules_never_query_tenant_models_directly(path):
    owned = _tenant_owned_models()
    offenders = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"objects", "_default_manager", "_base_manager"}
            and isinstance(node.value, ast.Name)
            and node.value.id in owned
        ):
            offenders.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
    assert not offenders, f"use tenants.access.scoped()/get_for_tenant(): {offenders}"


def test_request_modules_were_found():
    assert any(p.name == "views.py" for p in REQUEST_MODULES)


def test_tenant_viewsets_cannot_override_the_scoped_queryset():
    with pytest.raises(TypeError, match="filter_tenant_queryset"):

        class Leaky(TenantViewSet):
            def get_queryset(self):
                return Tenant.objects.all()


# The import graph (layers, no cycles, no app importing another's views, no runtime import of
# swrly.dev) is checked by import-linter's contracts in pyproject.toml: `make lint`.


def test_the_architecture_picture_shows_the_layers_the_contract_checks():
    """docs/architecture.md draws the layers of [tool.importlinter], top to bottom, in order."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    picture = doc.split("```mermaid", 1)[1].split("```", 1)[0]
    positions = []
    for layer in layers:
        modules = [m.strip() for m in re.split(r"[:|]", layer)]
        missing = [m for m in modules if m.removeprefix("swrly.") not in picture]
        assert not missing, f"the picture does not show {missing}"
        positions.append(picture.index(modules[0].removeprefix("swrly.")))
    assert positions == sorted(positions), "the picture's layers are not in the contract's order"
