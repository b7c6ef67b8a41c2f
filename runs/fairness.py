"""Per-tenant fairness: how many runs a tenant may have queued, and running, at once.

Admission (`run_create`): a tenant with its queued limit reached is refused (QueueFull, the API's
429 `run_queue_full`) before any key is deposited; the count is taken again under the tenant's
audit-chain head, which every run creation of the tenant locks before it commits, so two
concurrent requests can never both take the last place (the one that loses the race rolls back
and its just-deposited tokens are discarded, as for a key blocked meanwhile).

In flight (the executor's claim): the tenant's running runs are counted under the same chain
head, which every claim of the tenant locks for its `run.started` event; over the running limit
the claim is rolled back (TenantBusy) before any key is taken: the run stays queued with its
keys, and the task enqueues it again RUN_DEFER_DELAY seconds later.

Both limits bound the queue wait, which must stay below BYOK_TOKEN_TTL (docs/operations.md,
"Fairness and backpressure").
"""

from runs.models import Run, RunStatus
from tenants.models import Tenant

# Seconds a client refused with 429 `run_queue_full` is told to wait (Retry-After): about the
# time a running run takes to free a place for the next queued one. A fixed, small value: the
# client retries (with the same Idempotency-Key) and is refused again, cheaply, while it waits.
QUEUE_FULL_RETRY_AFTER = 5


class QueueFull(Exception):
    """The tenant already has `limit` runs queued; nothing was created or deposited."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this tenant already has {limit} runs waiting for a worker (its limit); "
            f"retry in {QUEUE_FULL_RETRY_AFTER} seconds"
        )
        self.limit = limit
        self.retry_after = QUEUE_FULL_RETRY_AFTER


class TenantBusy(Exception):
    """The run's tenant is at its running limit: the run was not claimed, its keys not taken."""


def _count(tenant: Tenant, status: RunStatus, limit: int) -> int:
    """The tenant's runs in `status`, counted up to `limit` + 1 (one indexed statement that
    reads no more rows than it needs to, whatever the backlog)."""
    return Run.objects.filter(tenant=tenant, status=status)[: limit + 1].count()


def admit_run(tenant: Tenant, *, including_new: bool) -> None:
    """QueueFull unless the tenant has room for one more queued run.

    `including_new`: the new run is already inserted in this transaction (the count under the
    chain head), so it counts itself.
    """
    limit = tenant.queued_runs_limit
    if _count(tenant, RunStatus.QUEUED, limit) > (limit if including_new else limit - 1):
        raise QueueFull(limit)


def may_start(tenant: Tenant) -> None:
    """TenantBusy when the tenant runs more runs than its limit, the claimed one included.

    Called under the tenant's chain head in the claim's transaction (which has already set the
    claimed run `running`): every claim of the tenant counts after the one before it committed.
    """
    limit = tenant.running_runs_limit
    if _count(tenant, RunStatus.RUNNING, limit) > limit:
        raise TenantBusy(f"tenant {tenant.slug} is running {limit} runs (its limit)")
