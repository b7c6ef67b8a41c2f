"""The audit log's filters (its page, its export and its API), and the tenant-bound FilterSet."""

from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils.functional import lazy

from swrly.audit.events import action_filter_choices
from swrly.web.filters import DayFilter, FilterSet
from tenants.models import Tenant


class TenantFilterSet(FilterSet):
    """A FilterSet that knows the tenant whose rows it filters (the API's comes from the view)."""

    def __init__(self, data: Any = None, queryset: Any = None, *, tenant: Tenant, **kwargs: Any):
        self.tenant = tenant
        super().__init__(data, queryset, **kwargs)


def _action_help() -> str:
    return "Exact, or a group: key.*. Recorded actions: " + ", ".join(action_filter_choices())


class ActionField(forms.RegexField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            regex=r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$",
            max_length=64,
            strip=True,
            error_messages={"invalid": "An action looks like key.deposited, or key.* for a group."},
            **kwargs,
        )


class ActionFilter(django_filters.CharFilter):
    """An action, exact, or a group when it ends with ".*" ("key.*")."""

    field_class = ActionField

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        if not value:
            return qs
        if value.endswith(".*"):
            return qs.filter(action__startswith=value[:-1])
        return qs.filter(action=value)


class AuditFilterSet(TenantFilterSet):
    """The audit log's filters; the same filters select what an export contains."""

    action = ActionFilter(help_text=lazy(_action_help, str)())
    actor = django_filters.CharFilter(
        lookup_expr="icontains", max_length=300, help_text="Contains (case-insensitive)."
    )
    target = django_filters.CharFilter(
        lookup_expr="icontains", max_length=300, help_text="Contains (case-insensitive)."
    )
    # "from" is a Python keyword: the class namespace takes it by name.
    locals()["from"] = DayFilter(
        field_name="created_at", help_text="From this day (UTC), inclusive."
    )
    to = DayFilter(field_name="created_at", until=True, help_text="To this day (UTC), inclusive.")
