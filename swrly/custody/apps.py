from django.apps import AppConfig


class CustodyConfig(AppConfig):
    name = "swrly.custody"
    label = "custody"
    verbose_name = "Key custody"
