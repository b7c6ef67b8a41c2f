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
        *ROOT.glob(f"{app}/pages.py"),
        *ROOT.glob(f"{app}/api/*.py"),
        *ROOT.glob(f"{app}/api.py"),
    ]
)
APPS = ("tenants", "runs", "swrly.audit", "swrly.custody")


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


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    folder = ROOT.joinpath(*package.split("."))
    return {_module(path): path for path in folder.rglob("*.py") if "migrations" not in path.parts}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_web_layer_imports_no_app():
    offenders = {
        f"{module} imports {name}"
        for module, path in _modules("swrly.web").items()
        for name in _imports(path)
        if any(_within(name, app) for app in APPS)
    }
    assert not offenders


def test_no_app_imports_another_apps_views():
    offenders = set()
    for app in ("tenants", "runs"):
        for module, path in _modules(app).items():
            for name in _imports(path):
                owner = next((other for other in APPS if _within(name, other)), None)
                if owner not in (None, app) and name.split(".")[-1] == "views":
                    offenders.add(f"{module} imports {name}")
    assert not offenders


def test_the_runs_app_imports_form_no_cycle():
    modules = _modules("runs")
    graph = {module: _imports(path) & modules.keys() for module, path in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " → ".join([*path, module]))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
