"""The provider registry is the one home of provider facts, and a foundation module."""

import ast
from pathlib import Path

from django.conf import settings

import swrly.providers
from runs.providers.client import response_request_id
from runs.providers.openai import OPENAI
from swrly.providers import PROVIDERS, default_base_urls

FIRST_PARTY = {"swrly", "tenants", "runs", "tests"}


def test_the_registry_imports_nothing_from_the_project():
    tree = ast.parse(Path(swrly.providers.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & FIRST_PARTY


def test_every_provider_has_a_display_name_and_its_wire_format_a_path():
    for name, provider in PROVIDERS.items():
        assert provider.name == name
        assert provider.display_name
        assert provider.wire.path.startswith("/v1/")


def test_the_default_base_urls_are_the_registrys():
    assert default_base_urls() == {
        "anthropic": "https://api.anthropic.com",
        "openai": "https://api.openai.com",
    }
    assert "sandbox" not in default_base_urls()
    # the settings start from them (the test settings name only the ones they change)
    assert set(settings.PROVIDER_BASE_URLS) <= set(PROVIDERS)


def test_keys_travel_in_each_wire_formats_own_headers():
    assert PROVIDERS["anthropic"].wire.auth_headers("k") == {
        "x-api-key": "k",
        "anthropic-version": "2026-10-21",
    }
    assert PROVIDERS["openai"].wire.auth_headers("k") == {"authorization": "Bearer k"}
    assert PROVIDERS["sandbox"].wire is PROVIDERS["openai"].wire
    assert response_request_id({"x-request-id": "r1"}, OPENAI) == "r1"
