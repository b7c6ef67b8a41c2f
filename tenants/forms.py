from typing import Any

from django import forms

from tenants.models import Role
from tenants.selectors import AuditFilters


class MemberAddForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)


class AuditFilterForm(forms.Form):
    """The audit log's filters (GET); the same filters select what an export contains."""

    action = forms.RegexField(
        regex=r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$",
        max_length=64,
        required=False,
        strip=True,
        error_messages={"invalid": "An action looks like key.deposited, or key.* for a group."},
    )
    actor = forms.CharField(max_length=300, required=False, strip=True)
    target = forms.CharField(max_length=300, required=False, strip=True)

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        # "from" is a Python keyword, so the date fields are added here.
        self.fields["from"] = forms.DateField(required=False)
        self.fields["to"] = forms.DateField(required=False)

    def filters(self) -> AuditFilters:
        """The filters whose values are valid; an invalid one is ignored (and shown as an error)."""
        self.is_valid()
        data = self.cleaned_data
        return AuditFilters(
            action=data.get("action") or "",
            actor=data.get("actor") or "",
            target=data.get("target") or "",
            created_from=data.get("from"),
            created_to=data.get("to"),
        )
