"""Swrly: AI-agent workflows run with the customer's own model-provider keys."""

from swrly.celery import app as celery_app

__all__ = ["celery_app"]
