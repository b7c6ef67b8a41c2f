from django import forms
from django.contrib.auth import password_validation

from tenants.models import Role


class SecondFactorForm(forms.Form):
    code = forms.CharField(max_length=32, strip=True)


class NewAccountForm(forms.Form):
    """The invitee's own password, checked by Django's validators against their address."""

    password1 = forms.CharField(strip=False, max_length=4096)
    password2 = forms.CharField(strip=False, max_length=4096)

    def __init__(self, *args: object, email: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.email = email

    def clean(self) -> dict:
        data = super().clean() or {}
        first, second = data.get("password1"), data.get("password2")
        if first and second and first != second:
            raise forms.ValidationError("The two passwords differ.")
        if first:
            from django.contrib.auth import get_user_model

            probe = get_user_model()(username=self.email, email=self.email)
            password_validation.validate_password(first, probe)
        return data


class MfaPolicyForm(forms.Form):
    required_roles = forms.MultipleChoiceField(
        choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
