"""The view that serves the OpenAPI schema (apart from swrly/web/schema.py, which the
settings name as the schema class: drf-spectacular's views import it back)."""

import threading
from collections.abc import Iterable
from typing import Any

from drf_spectacular.renderers import OpenApiJsonRenderer2
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SCHEMA_KWARGS, SpectacularAPIView
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

_SCHEMA_LOCK = threading.Lock()


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, generated one request at a time per process.

    drf-spectacular loads its extensions lazily and not thread-safely: the first concurrent
    schema requests in a threaded worker could answer 500 (one thread saw another's
    half-loaded extension). Generation is rare and quick; serializing it costs nothing.
    """

    @extend_schema(**SCHEMA_KWARGS)  # as the parent's: not itself in the schema
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with _SCHEMA_LOCK:
            return super().get(request, *args, **kwargs)


class _JsonAlways(BaseContentNegotiation):
    """The view's one renderer, whatever the request's Accept header says."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> None:
        return None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class SchemaJsonView(SchemaView):
    """The same schema, always as JSON (`application/json`): the URL to give a generator."""

    renderer_classes = [OpenApiJsonRenderer2]
    content_negotiation_class = _JsonAlways
