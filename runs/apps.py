from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from runs.selectors import key_run_count, register_queue_gauges
        from runs.services import runs_cancel_holding_key
        from swrly.custody.selectors import register_key_run_count
        from swrly.custody.services import register_key_blocked_handler

        # The key history (custody) counts each key's runs with the runs app's query.
        register_key_run_count(key_run_count)
        # A key blocked (custody) cancels the runs holding it (a runs concern).
        register_key_blocked_handler(runs_cancel_holding_key)
        # The queue's depth, read from the database when /metrics is scraped.
        register_queue_gauges()
