from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "swrly.identity"
    label = "identity"
    verbose_name = "Identity: invitations and MFA"
    default_auto_field = "django.db.models.BigAutoField"
