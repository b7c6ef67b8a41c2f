from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from runs.selectors import key_run_count
        from swrly.custody.selectors import register_key_run_count

        # The key history (custody) counts each key's runs with the runs app's query.
        register_key_run_count(key_run_count)
