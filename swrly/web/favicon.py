"""/favicon.ico, which browsers ask for whatever the page links: a redirect to the SVG icon."""

from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

FAVICON = "swrly/favicon.svg"


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """301 to the static SVG icon (its hashed name once `collectstatic` has run)."""
    return HttpResponsePermanentRedirect(static(FAVICON))
