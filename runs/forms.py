"""The runs list's filter form (GET): its valid fields become runs.selectors.RunFilters."""

import uuid
from typing import Any, cast

from django import forms

from runs.models import RunStatus, Workflow
from runs.selectors import RunFilters


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *RunStatus.choices], required=False)
    workflow = forms.ChoiceField(required=False)
    fingerprint = forms.RegexField(
        regex=r"^(?:[vV]2:)?[0-9a-fA-F]{8,64}$",
        required=False,
        strip=True,
        error_messages={
            "invalid": "A fingerprint is 8 to 64 hexadecimal characters (after v2: if it has it)."
        },
    )

    def __init__(self, data: Any, *, workflows: list[Workflow]) -> None:
        super().__init__(data)
        cast(forms.ChoiceField, self.fields["workflow"]).choices = [("", "Any workflow")] + [
            (str(w.pk), w.name) for w in workflows
        ]
        # "from" is a Python keyword, so the date fields are added here.
        self.fields["from"] = forms.DateField(required=False)
        self.fields["to"] = forms.DateField(required=False)

    def filters(self) -> RunFilters:
        """The filters whose values are valid; an invalid one is ignored (and shown as an error)."""
        self.is_valid()
        data = self.cleaned_data
        workflow = data.get("workflow")
        return RunFilters(
            status=data.get("status") or "",
            workflow_id=uuid.UUID(workflow) if workflow else None,
            created_from=data.get("from"),
            created_to=data.get("to"),
            fingerprint=(data.get("fingerprint") or "").lower(),
        )
