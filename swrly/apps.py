from django.apps import AppConfig


class SwrlyConfig(AppConfig):
    name = "swrly"
    verbose_name = "Swrly"

    def ready(self) -> None:
        from swrly import checks  # noqa: F401  (registers the system checks)
        from swrly.keys.redaction import install_log_redaction

        install_log_redaction()
