"""Swrly's own 404 page whatever DEBUG says (the API keeps its JSON), and the favicon."""

from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from tenants.models import Role

TECHNICAL = "Using the URLconf"  # Django's yellow DEBUG 404 page


def _swrly_404(response) -> str:
    assert response.status_code == 404
    html = response.content.decode()
    assert "<title>Not found · Swrly</title>" in html
    assert "There is nothing here, or you do not have access to it." in html
    assert TECHNICAL not in html
    assert 'rel="icon"' in html  # the base layout
    return html


@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_path_gets_swrlys_404_page(settings, debug):
    settings.DEBUG = debug
    _swrly_404(Client().get("/no-such-page/"))


@pytest.mark.parametrize("debug", [True, False])
def test_a_404_a_page_raises_gets_swrlys_404_page(settings, acme, debug):
    settings.DEBUG = debug
    html = _swrly_404(acme.client(Role.OWNER).get("/t/no-such-tenant/runs/"))
    assert acme.users[Role.OWNER].username in html  # the signed-in layout


@pytest.mark.parametrize("debug", [True, False])
def test_the_404_page_keeps_the_security_headers(settings, debug):
    settings.DEBUG = debug
    response = Client().get("/no-such-page/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    if not debug:  # django-csp leaves DEBUG error pages without a policy, by design
        assert "default-src" in response["Content-Security-Policy"]


@pytest.mark.parametrize("debug", [True, False])
def test_a_missing_slash_is_still_redirected(settings, debug):
    settings.DEBUG = debug
    response = Client().get("/accounts/login")
    assert response.status_code == 301
    assert response["Location"] == "/accounts/login/"


@pytest.mark.parametrize("debug", [True, False])
def test_the_api_keeps_its_json_404s(settings, acme, debug):
    settings.DEBUG = debug
    response = acme.api(Role.OWNER).get(reverse("api:run-detail", kwargs={"pk": "0" * 32}))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_favicon_ico_redirects_to_the_svg_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/swrly/favicon.svg"
    assert "max-age=86400" in response["Cache-Control"]
    assert client.post("/favicon.ico").status_code == 405


def test_every_page_links_the_svg_icon_and_the_file_exists(client):
    html = client.get(reverse("login")).content.decode()
    assert '<link rel="icon" href="/static/swrly/favicon.svg" type="image/svg+xml">' in html
    icon = Path(finders.find("swrly/favicon.svg")).read_text()
    assert icon.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert "<script" not in icon
