"""The one filtering mechanism of the lists: django-filter FilterSets, for pages and API alike.

A page builds the FilterSet from request.GET and renders its form: the valid values filter,
an invalid one is reported beside the form and ignored. The API names a `filterset_class`
(DjangoFilterBackend): an invalid value is a 400 naming the parameter, and drf-spectacular
documents the parameters from the same declarations.
"""

from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django_filters.constants import EMPTY_VALUES


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


class DayFilter(django_filters.DateFilter):
    """A UTC day bounding a date-time field: from its start, or (`until`) to its end."""

    def __init__(self, *, until: bool = False, **kwargs: Any) -> None:
        self.until = until
        super().__init__(**kwargs)

    def filter(self, qs: QuerySet, value: date | None) -> QuerySet:
        if value is None or value in EMPTY_VALUES:
            return qs
        if self.until:
            return qs.filter(**{f"{self.field_name}__lt": day_start(value + timedelta(days=1))})
        return qs.filter(**{f"{self.field_name}__gte": day_start(value)})


class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time, converted to UTC before it reaches a query.

    Python accepts UTC offsets up to ±23:59, PostgreSQL only up to ±15:59: a value such as
    `…+18:49` passed on as given fails in the database (a 500). In UTC it is an ordinary
    instant; one that does not exist in UTC (year 1 with a negative offset) is invalid.
    """

    def to_python(self, value: Any) -> datetime | None:
        try:
            parsed: datetime | None = super().to_python(value)
            if parsed is None or parsed.tzinfo is None:
                return parsed
            return parsed.astimezone(UTC)
        except OverflowError as error:
            raise forms.ValidationError("This date-time does not exist in UTC.") from error


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """A date-time bound, compared in UTC (UtcDateTimeField)."""

    field_class = UtcDateTimeField


class FilterSet(django_filters.FilterSet):
    """A FilterSet that says which of its values are in effect (a page's "Clear filters")."""

    @cached_property
    def values(self) -> dict[str, Any]:
        """The valid, non-empty values: those that filter."""
        self.errors  # noqa: B018 (validates the form)
        cleaned = getattr(self.form, "cleaned_data", {})
        return {name: value for name, value in cleaned.items() if value not in EMPTY_VALUES}

    @property
    def active(self) -> bool:
        return bool(self.values)

    def as_metadata(self) -> dict[str, str]:
        """The values in effect as text (an audited export records them)."""
        return {
            name: value.isoformat() if isinstance(value, date) else str(value)
            for name, value in self.values.items()
        }
