from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    name = "swrly.evidence"
    label = "evidence"
    verbose_name = "Evidence bundles"
