"""The Celery application. Tasks receive ids only; a provider key never enters the broker."""

import os

from celery import Celery
from celery.signals import worker_init

from swrly.logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")

app = Celery("swrly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
connect_celery_signals()  # the request id rides along with every task (swrly/logs.py)


@worker_init.connect
def _refuse_misconfigured_worker(**_: object) -> None:
    from swrly.checks import raise_on_startup_errors

    raise_on_startup_errors()
