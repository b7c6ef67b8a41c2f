"""The Python client example in docs/api.md, run as written against a live server."""
# ruff: noqa: F811  (the fixtures imported below are requested by name)

import re
from pathlib import Path

from tenants.models import Role
from tests.runs.conftest import celery_worker  # noqa: F401  (a pytest fixture)
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _example() -> str:
    block = DOC.read_text().split("<!-- client-example:start -->")[1]
    block = block.split("<!-- client-example:end -->")[0]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_the_documented_client_runs_against_a_live_server(
    acme, live_server, provider_server_factory, celery_worker, monkeypatch, capsys
):
    key = "sk-sandbox-client-example-0001"
    provider_server_factory(expected_keys={key})
    monkeypatch.setenv("SWRLY_URL", live_server.url)
    monkeypatch.setenv("SWRLY_TOKEN", acme.tokens[Role.DEVELOPER])
    monkeypatch.setenv("SWRLY_PROVIDER", "sandbox")
    monkeypatch.setenv("SWRLY_PROVIDER_KEY", key)
    monkeypatch.setenv("SWRLY_MODEL", "sandbox-1")
    namespace = {"__name__": "docs_example"}
    exec(compile(_example(), "docs/api.md", "exec"), namespace)  # noqa: S102 (our own docs)

    result = namespace["main"]()

    assert result["run"]["status"] == "succeeded"
    (step,) = result["run"]["steps"]
    assert step["provider_request_id"]
    (timeline,) = result["timeline"]["keys"]
    assert [entry["kind"] for entry in timeline["entries"]] == ["deposited", "consumed", "released"]
    printed = capsys.readouterr().out
    assert "summary succeeded" in printed
    assert key not in printed
