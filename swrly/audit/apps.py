from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "swrly.audit"
    label = "audit"
    verbose_name = "Audit"
