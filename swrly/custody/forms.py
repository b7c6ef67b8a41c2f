"""The key-history page's form: block a key by fingerprint or by the key itself."""

from typing import Any

from django import forms

from swrly.keys.fingerprint import FINGERPRINT_PATTERN
from swrly.keys.secret import ProviderSecret
from swrly.keys.store import KEY_MAX_LENGTH
from swrly.providers import PROVIDER_NAMES


class BlockedKeyForm(forms.Form):
    provider = forms.ChoiceField(choices=[(name, name) for name in PROVIDER_NAMES])
    fingerprint = forms.CharField(
        required=False,
        max_length=80,
        strip=True,
        help_text='"v2:" and 64 hex characters (a legacy fingerprint: 64 hex characters).',
    )
    # Never rendered back (PasswordInput), held in a ProviderSecret as soon as it is cleaned.
    key = forms.CharField(
        required=False, strip=False, max_length=KEY_MAX_LENGTH, widget=forms.PasswordInput
    )
    reason = forms.CharField(required=False, max_length=500)

    def clean_fingerprint(self) -> str:
        value: str = self.cleaned_data["fingerprint"].lower()
        if value and not FINGERPRINT_PATTERN.fullmatch(value):
            raise forms.ValidationError(
                '"v2:" and 64 hex characters, or 64 hex characters for a legacy fingerprint.'
            )
        return value

    def clean_key(self) -> ProviderSecret | None:
        value = self.cleaned_data["key"]
        return ProviderSecret(value) if value else None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("fingerprint")) == bool(data.get("key")):
            raise forms.ValidationError("Give either the key's fingerprint or the key itself.")
        return data
