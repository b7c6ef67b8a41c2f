"""A hung broker (it accepts connections and never answers) cannot hold a POST: publishing has a
deadline, the request answers, and the run it committed is ended with its keys discarded."""

import threading

from django.test import Client

from runs.models import Run, RunStatus
from runs.services import workflow_create
from swrly.audit.writer import Actor
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.runs.real_workers import publishing_to


def test_a_post_answers_while_the_broker_hangs(acme, transactional_db, key_store, broker):
    workflow = workflow_create(
        tenant=acme.tenant,
        name="one",
        steps=[{"name": "a", "provider": "anthropic", "model": "claude-x", "prompt": "Hi"}],
        actor=Actor.system("tests"),
    )
    answers = []

    def post():
        answers.append(
            Client(headers={"Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}"}).post(
                "/api/v1/runs/",
                {
                    "workflow": str(workflow.pk),
                    "provider_keys": {"anthropic": "sk-ant-canary-hang-0123456789abcdef"},
                },
                "application/json",
            )
        )

    with publishing_to(broker.url):
        with broker.hang():
            request = threading.Thread(target=post, daemon=True)
            request.start()
            # a bound for the test, not a timing assertion: a POST without a publish deadline
            # waits for the broker for ever
            request.join(timeout=60)
            answered = not request.is_alive()
        request.join(timeout=60)
    assert answered, "the POST waited for the hung broker"
    (response,) = answers
    assert response.status_code == 202
    run = Run.objects.get(pk=response.json()["id"])
    assert (run.status, run.error_code) == (RunStatus.FAILED, "queue_unavailable")
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
