"""The runs list's filters: the runs page and the runs API (GET /api/v1/runs/)."""

from collections.abc import Sequence
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet

from runs.models import Run, RunStatus, Workflow
from runs.selectors import runs_with_fingerprint
from swrly.web.filters import DayFilter, UtcDateTimeFilter
from tenants.filters import TenantFilterSet


class FingerprintField(forms.RegexField):
    """A key fingerprint, whole or its first characters, as lowercase hex."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            regex=r"^(?:[vV]2:)?[0-9a-fA-F]{8,64}$",
            strip=True,
            error_messages={
                "invalid": "A fingerprint is 8 to 64 hexadecimal characters (after v2: if it "
                "has it)."
            },
            **kwargs,
        )

    def clean(self, value: Any) -> str:
        return (super().clean(value) or "").lower()


class FingerprintFilter(django_filters.CharFilter):
    field_class = FingerprintField


class RunFilterSet(TenantFilterSet):
    """The page's names (from, to: UTC days) and the API's (created_after, created_before:
    date-times) are both accepted, each with its own meaning.
    """

    status = django_filters.ChoiceFilter(choices=RunStatus.choices, empty_label="Any status")
    workflow = django_filters.UUIDFilter(field_name="workflow_id")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    # "from" is a Python keyword: the class namespace takes it by name.
    locals()["from"] = DayFilter(field_name="created_at", help_text="From this day (UTC).")
    to = DayFilter(field_name="created_at", until=True, help_text="To this day (UTC), inclusive.")
    fingerprint = FingerprintFilter(
        method="filter_fingerprint",
        help_text="Runs that used a key with this fingerprint (8 to 64 hex characters, after "
        "`v2:` for a v2 fingerprint: a prefix).",
    )

    def __init__(
        self,
        data: Any = None,
        queryset: Any = None,
        *,
        workflows: Sequence[Workflow] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, queryset, **kwargs)
        if workflows is not None:
            # The page offers the tenant's workflows; another value is reported as invalid.
            self.filters["workflow"] = django_filters.ChoiceFilter(
                field_name="workflow_id",
                choices=[(str(w.pk), w.name) for w in workflows],
                empty_label="Any workflow",
            )
            self.filters["workflow"].parent = self
            self.filters["workflow"].model = Run

    def filter_fingerprint(self, queryset: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        return runs_with_fingerprint(tenant=self.tenant, runs=queryset, fingerprint=value)
