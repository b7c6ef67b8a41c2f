"""The Celery application. Tasks receive ids only; a provider key never enters the broker."""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")

app = Celery("swrly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _refuse_misconfigured_worker(**_: object) -> None:
    from swrly.checks import raise_on_startup_errors

    raise_on_startup_errors()
