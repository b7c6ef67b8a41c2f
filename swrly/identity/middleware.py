"""Sessions must satisfy the identity rules before any page runs.

- A session of a user with a second factor that was not verified at sign-in (made by another
  sign-in path) is ended.
- A user whose password was generated is sent to the password page until they change it.
- On a tenant page, a member whose role the tenant's MFA policy names, without a second factor,
  is sent to enrolment.

API requests (Bearer API tokens) are not sessions and pass untouched.
"""

from collections.abc import Callable
from typing import Any

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

from swrly.identity import mfa
from swrly.identity.models import TenantMfaPolicy
from swrly.identity.services import password_change_pending
from tenants.models import Membership

# Pages a signed-in user can always reach (to comply, or to leave); invitations' pages are
# under the prefix of "invitation-accept".
_EXEMPT_NAMES = ("logout", "password-change", "mfa-setup", "mfa-verify")
_PASSWORD_CHECKED = "swrly_password_ok"  # noqa: S105 (a session key name)


def _exempt_paths() -> tuple[str, ...]:
    return (*(reverse(name) for name in _EXEMPT_NAMES), "/invitations/", "/favicon.ico")


class IdentityMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._exempt: tuple[str, ...] | None = None

    def _is_exempt(self, path: str) -> bool:
        if self._exempt is None:
            self._exempt = _exempt_paths()
        return path.startswith(self._exempt)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            user is None
            or not user.is_authenticated
            or request.path.startswith(("/api/", "/static/"))
        ):
            return self.get_response(request)
        if mfa.SESSION_KEY not in request.session:
            if mfa.has_second_factor(user):
                # Signed in without the second factor (not through the sign-in page): start
                # again.
                logout(request)
                return HttpResponseRedirect(reverse("login"))
            request.session[mfa.SESSION_KEY] = mfa.NO_SECOND_FACTOR
        if not request.session.get(_PASSWORD_CHECKED) and not self._is_exempt(request.path):
            if password_change_pending(user):
                return HttpResponseRedirect(
                    f"{reverse('password-change')}?{urlencode({'next': request.path})}"
                )
            request.session[_PASSWORD_CHECKED] = True
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        slug = view_kwargs.get("tenant_slug")
        user = getattr(request, "user", None)
        if not slug or user is None or not user.is_authenticated:
            return None
        if request.session.get(mfa.SESSION_KEY, mfa.NO_SECOND_FACTOR) != mfa.NO_SECOND_FACTOR:
            return None  # verified with a second factor: every policy is met
        required = (
            TenantMfaPolicy.objects.filter(tenant__slug=slug)
            .values_list("required_roles", flat=True)
            .first()
        )
        if not required:
            return None
        role = (
            Membership.objects.filter(tenant__slug=slug, user=user)
            .values_list("role", flat=True)
            .first()
        )
        if role is None or role not in required:
            return None  # non-members get the view's own 404
        return HttpResponseRedirect(
            f"{reverse('mfa-setup')}?{urlencode({'next': request.path, 'required': slug})}"
        )
