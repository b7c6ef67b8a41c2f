"""Structural rules that keep tenant scoping from depending on memory."""

import ast
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


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _importers(package: str, imported: str) -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if any(name == imported or name.startswith(f"{imported}.") for name in _imports(path))
    )


def test_key_custody_never_imports_runs():
    """swrly.custody sits below runs: runs calls it (and registers its run counter)."""
    assert _importers("swrly/custody", "runs") == []


# The dashboard and the /api/v1/ URLconf still live in tenants; both are on their way up
# (the dashboard to runs, the URLconf to swrly/api.py), and nothing else may be added here.
TENANTS_MODULES_ABOVE_CUSTODY = ["tenants/api/urls.py", "tenants/views.py"]


def test_tenants_never_imports_key_custody():
    """tenants sits below swrly.custody (which imports it)."""
    assert _importers("tenants", "swrly.custody") == TENANTS_MODULES_ABOVE_CUSTODY
