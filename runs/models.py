"""Workflows, runs and the steps of a run."""

import uuid

from django.db import models
from django.db.models import F

from runs.providers.egress import Destination
from swrly.providers import PROVIDER_NAMES
from tenants.models import Tenant


class Workflow(models.Model):
    """An ordered list of model-call steps (see runs/workflow_spec.py for their shape)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    steps = models.JSONField(default=list)
    created_by = models.CharField(max_length=300)
    updated_by = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="workflow_tenant_time")]

    def __str__(self) -> str:
        return self.name

    @property
    def providers(self) -> list[str]:
        return sorted({step["provider"] for step in self.steps})


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class RunError(models.TextChoices):
    KEY_EXPIRED = "key_expired", "The provider key expired before the run started"
    KEY_MISSING = "key_missing", "The provider key was not in the key store"
    KEY_REJECTED = (
        "key_rejected",
        "The stored key failed authentication or its encryption key is gone",
    )
    KEY_STORE_UNAVAILABLE = "key_store_unavailable", "The key store did not answer"
    PROVIDER_AUTH_FAILED = "provider_auth_failed", "The provider refused the key"
    PROVIDER_ERROR = "provider_error", "The provider answered with an error"
    TIMEOUT = "timeout", "The provider did not answer in time"
    EGRESS_REFUSED = "egress_refused", "No allowed address is configured for the provider"
    KEY_LEAK_BLOCKED = (
        "key_leak_blocked",
        "A request carrying another provider's key was refused before it was sent",
    )
    TEMPLATE_ERROR = "template_error", "A prompt template could not be rendered"
    INTERRUPTED = "interrupted", "The worker stopped during the run"
    QUEUE_UNAVAILABLE = "queue_unavailable", "The run could not be handed to a worker"
    POLICY_REFUSED = (
        "policy_refused",
        "The tenant's policy no longer allowed a provider or model of the run when it started",
    )
    INTERNAL_ERROR = "internal_error", "Swrly failed during the run"


class Run(models.Model):
    """One execution of a workflow, with the customer's keys for the providers it uses."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="runs")
    workflow = models.ForeignKey(
        Workflow, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    workflow_name = models.CharField(max_length=200)
    steps = models.JSONField(default=list)  # the workflow's steps, frozen when the run was made
    input = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    error_code = models.CharField(max_length=32, choices=RunError.choices, blank=True)
    error_message = models.TextField(blank=True)
    triggered_by = models.CharField(max_length=300)
    # {provider: {"fingerprint": hex, "hint": "sk-…abcd"}}: which key ran the run, never the key.
    key_fingerprints = models.JSONField(default=dict, blank=True)
    keys_expire_at = models.DateTimeField(null=True, blank=True)
    # Set by the conditional update that claims the run: its tokens can be taken only once. Reset
    # only when the claim is given back before any token was read (runs.executor._release).
    keys_consumed_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The last re-enqueue of this queued run (by the sweeper, by a worker that left it queued
    # at its tenant's running limit: runs.executor.run_defer, or by one that gave it back when
    # the key store did not answer), and how many the sweeper made (never the first enqueue,
    # which happens when the run is committed).
    requeued_at = models.DateTimeField(null=True, blank=True)
    requeues = models.PositiveSmallIntegerField(default=0)
    # How many times a worker gave the claimed run back to the queue, no key taken, because the
    # key store did not answer (runs.executor; bounded by RUN_KEY_STORE_RETRIES).
    releases = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the tenant's retention purged the run's content (input, prompts, outputs, error
    # texts; runs.retention): the metadata, fingerprints and audit events stay.
    content_purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # What the retention purge looks for: ended runs whose content is still there.
            models.Index(
                fields=["tenant", "finished_at"],
                condition=models.Q(content_purged_at__isnull=True, finished_at__isnull=False),
                name="run_content_kept",
            ),
            models.Index(fields=["tenant", "-created_at", "-id"], name="run_tenant_time"),
            models.Index(fields=["tenant", "status", "-created_at"], name="run_tenant_status_time"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat"),
            # The runs of one key (the key history links to them, newest first): one index per
            # provider on the fingerprint's JSON path, so a page at any depth reads a page of
            # it. Without it the planner guesses the fingerprint rare and sorts every run of
            # the tenant in the key's lifetime (20,000 rows read for a page of 50).
            *(
                models.Index(
                    F("tenant"),
                    F(f"key_fingerprints__{provider}__fingerprint"),
                    F("created_at").desc(),
                    F("id").desc(),
                    name=f"run_key_{provider}",
                )
                for provider in PROVIDER_NAMES
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_name} {self.status}"

    @property
    def providers(self) -> list[str]:
        return sorted({step["provider"] for step in self.steps})

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class StepRun(models.Model):
    """One step of a run: the model call, its usage, and the provider's request id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_runs")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    provider_request_id = models.CharField(max_length=200, blank=True)
    # Where the step's requests went (the allow-listed base URL's scheme, host and port): set
    # when the step starts, confirmed by the call; empty when nothing was sent.
    destination_scheme = models.CharField(max_length=8, blank=True)
    destination_host = models.CharField(max_length=253, blank=True)
    destination_port = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # A streamed step: milliseconds from sending the request to the first text of the answer.
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    output_text = models.TextField(blank=True)
    error = models.TextField(blank=True)  # redacted before it is stored
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="steprun_unique_position"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.position} {self.name}"

    @property
    def destination(self) -> Destination | None:
        """Where the step's requests went; None when nothing was sent."""
        if not self.destination_host or self.destination_port is None:
            return None
        return Destination(self.destination_scheme, self.destination_host, self.destination_port)

    @destination.setter
    def destination(self, value: Destination | None) -> None:
        self.destination_scheme = value.scheme if value else ""
        self.destination_host = value.host if value else ""
        self.destination_port = value.port if value else None


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key for POST /api/v1/runs/: a retry gets the first run back.

    `request_hash` covers the workflow, the input and the fingerprints of the keys, so the same
    key with a different request is refused rather than answered with the wrong run.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="idempotencykey_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotencykey_created")]

    def __str__(self) -> str:
        return f"{self.key} → {self.run_id}"
