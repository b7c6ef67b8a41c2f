"""Identity pages: sign-in with a second factor, MFA enrolment, invitations, the MFA policy."""

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_lockout_response
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from swrly.identity import mfa
from swrly.identity.forms import MfaPolicyForm, NewAccountForm, SecondFactorForm
from swrly.identity.models import Invitation, InvitationStatus
from swrly.identity.services import (
    InvitationError,
    invitation_accept,
    invitation_create,
    invitation_for_link,
    invitation_revoke,
    invitee_user,
    mfa_policy_set,
    mfa_required_roles,
    recovery_code_used,
    recovery_codes_regenerate,
    second_factor_verify,
    totp_enrolment_confirm,
    totp_enrolment_start,
)
from tenants.access import get_for_tenant, scoped
from tenants.forms import MemberAddForm
from tenants.models import AUDIT_READ_ROLES, MANAGE_ROLES, OWNER_ROLES, Role
from tenants.pages import TenantPageView
from tenants.signals import audit_user_event

_PENDING = "swrly_mfa_pending"


def _safe_next(request: HttpRequest, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return reverse("home")


# --- Sign-in -------------------------------------------------------------------------------


class SignInView(auth_views.LoginView):
    """Django's sign-in; a user with a second factor is asked for it before the session is
    theirs (the password alone signs no one in)."""

    redirect_authenticated_user = True

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        if not mfa.has_second_factor(user):
            response = super().form_valid(form)
            self.request.session[mfa.SESSION_KEY] = mfa.NO_SECOND_FACTOR
            return response
        self.request.session.cycle_key()
        self.request.session[_PENDING] = {
            "user_id": user.pk,
            "backend": user.backend,
            "at": timezone.now().timestamp(),
            "next": self.get_redirect_url(),
        }
        return redirect("mfa-verify")


@method_decorator([never_cache, sensitive_post_parameters("code")], name="dispatch")
class MfaVerifyView(View):
    """The second step of sign-in: a code from the authenticator app, or a recovery code."""

    template_name = "registration/mfa_verify.html"

    def _pending_user(self, request: HttpRequest) -> Any:
        from django.conf import settings
        from django.contrib.auth import get_user_model

        pending = request.session.get(_PENDING)
        if not pending:
            return None
        if timezone.now().timestamp() - pending["at"] > settings.MFA_SIGN_IN_WINDOW:
            del request.session[_PENDING]
            return None
        return get_user_model().objects.filter(pk=pending["user_id"], is_active=True).first()

    def get(self, request: HttpRequest) -> HttpResponse:
        if self._pending_user(request) is None:
            messages.info(request, "Sign in again: the sign-in took too long or was not started.")
            return redirect("login")
        return render(request, self.template_name, {"form": SecondFactorForm()})

    def post(self, request: HttpRequest) -> HttpResponseBase:
        user = self._pending_user(request)
        if user is None:
            messages.info(request, "Sign in again: the sign-in took too long or was not started.")
            return redirect("login")
        credentials = {"username": user.get_username()}
        if not AxesProxyHandler.is_allowed(request, credentials):
            del request.session[_PENDING]
            return get_lockout_response(request, None, credentials)
        form = SecondFactorForm(request.POST)
        method = second_factor_verify(user=user, code=request.POST.get("code", ""))
        if method is None:
            audit_user_event(action="auth.mfa_failed", user=user, request=request, bounded=True)
            # A wrong second factor counts toward the lockout like a wrong password.
            AxesProxyHandler.user_login_failed(
                sender=MfaVerifyView, credentials=credentials, request=request
            )
            if getattr(request, "axes_locked_out", False):
                del request.session[_PENDING]
            form.add_error(None, "That code is not valid. Try again, or use a recovery code.")
            return render(request, self.template_name, {"form": form}, status=400)
        pending = request.session.pop(_PENDING)
        auth_login(request, user, backend=pending["backend"])
        request.session[mfa.SESSION_KEY] = method
        if method == mfa.VERIFIED_BY_RECOVERY_CODE:
            recovery_code_used(user=user, request=request)
            messages.warning(
                request,
                f"You signed in with a recovery code. {mfa.recovery_codes_left(user)} are left.",
            )
        return redirect(_safe_next(request, pending.get("next")))


# --- MFA enrolment -------------------------------------------------------------------------


@method_decorator([never_cache, sensitive_post_parameters("code")], name="dispatch")
class MfaSetupView(LoginRequiredMixin, View):
    """The signed-in user's two-step verification: enrol an authenticator app, see how many
    recovery codes are left, make new ones."""

    template_name = "identity/mfa_setup.html"

    def _render(self, request: HttpRequest, **context: Any) -> HttpResponse:
        user = request.user
        device = mfa.totp_device(user)  # type: ignore[arg-type]
        context.setdefault("form", SecondFactorForm())
        context.update(
            enrolled=device is not None,
            recovery_left=mfa.recovery_codes_left(user) if device else 0,  # type: ignore[arg-type]
            next=request.GET.get("next", request.POST.get("next", "")),
            required=request.GET.get("required", ""),
        )
        return render(request, self.template_name, context)

    def _pending(self, request: HttpRequest) -> dict[str, Any]:
        device = totp_enrolment_start(user=request.user)  # type: ignore[arg-type]
        return {"secret": mfa.totp_secret_base32(device), "otpauth": device.config_url}

    def get(self, request: HttpRequest) -> HttpResponse:
        if mfa.totp_device(request.user) is not None:  # type: ignore[arg-type]
            return self._render(request)
        return self._render(request, enrolment=self._pending(request))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = SecondFactorForm(request.POST)
        code = request.POST.get("code", "")
        if mfa.totp_device(request.user) is not None:  # type: ignore[arg-type]
            codes = recovery_codes_regenerate(user=request.user, code=code, request=request)  # type: ignore[arg-type]
            if codes is None:
                form.add_error(
                    None, "That code is not valid. Enter the current code from your app."
                )
                return self._render(request, form=form)
            return self._render(request, recovery_codes=codes)
        codes = totp_enrolment_confirm(user=request.user, code=code, request=request)  # type: ignore[arg-type]
        if codes is None:
            form.add_error(None, "That code is not valid. Scan the new secret and try again.")
            return self._render(request, form=form, enrolment=self._pending(request))
        request.session[mfa.SESSION_KEY] = mfa.VERIFIED_BY_TOTP
        return self._render(request, recovery_codes=codes, just_enrolled=True)


# --- Invitations ---------------------------------------------------------------------------


class InvitationListView(TenantPageView):
    """Pending invitations, the invite form and revocation (owners and admins)."""

    allowed_roles = MANAGE_ROLES

    def render_list(self, form: MemberAddForm, status: int = 200) -> HttpResponse:
        invitations = scoped(Invitation, self.tenant).filter(
            accepted_at=None, revoked_at=None, expires_at__gt=timezone.now()
        )
        response = self.page(
            "identity/invitation_list.html", invitations=invitations, add_form=form
        )
        response.status_code = status
        return response

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.render_list(MemberAddForm())


class InvitationCreateView(InvitationListView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return redirect(self.url("identity:invitation-list"))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = MemberAddForm(request.POST)
        if not form.is_valid():
            return self.render_list(form, status=400)
        try:
            invitation = invitation_create(
                tenant=self.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                by=self.by,
                request=request,
            )
        except ValidationError as exc:
            form.add_error("email", exc)
            return self.render_list(form, status=400)
        messages.success(
            request,
            f"Invitation sent to {invitation.email}. The link works once and expires "
            f"on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
        )
        return redirect(self.url("identity:invitation-list"))


class InvitationRevokeView(TenantPageView):
    allowed_roles = MANAGE_ROLES

    def post(self, request: HttpRequest, tenant_slug: str, invitation_id: str) -> HttpResponse:
        invitation = get_for_tenant(
            Invitation, tenant=self.tenant, pk=invitation_id, actor=self.actor, request=request
        )
        try:
            invitation_revoke(invitation=invitation, by=self.by, request=request)
            messages.success(request, f"Revoked the invitation to {invitation.email}.")
        except ValidationError as exc:
            messages.error(request, exc.messages[0])
        return redirect(self.url("identity:invitation-list"))


_LINK = "swrly_invitation_secret"


@method_decorator(never_cache, name="dispatch")
class InvitationOpenView(View):
    """The e-mailed link: its secret moves into the session and the address bar loses it (as
    Django's password reset does), so it never leaks through a Referer or the history."""

    def get(self, request: HttpRequest, invitation_id: str, secret: str) -> HttpResponse:
        request.session[_LINK] = {"id": str(invitation_id), "secret": secret}
        return redirect("invitation-accept", invitation_id=invitation_id)


@method_decorator(
    [never_cache, sensitive_post_parameters("password1", "password2")], name="dispatch"
)
class InvitationAcceptView(View):
    template_name = "identity/invitation_accept.html"

    def _invitation(self, request: HttpRequest, invitation_id: str) -> Invitation | None:
        link = request.session.get(_LINK) or {}
        if link.get("id") != str(invitation_id):
            return None
        return invitation_for_link(invitation_id=invitation_id, secret=link.get("secret", ""))

    def _render(
        self, request: HttpRequest, invitation: Invitation | None, status: int = 200, **extra: Any
    ) -> HttpResponse:
        context: dict[str, Any] = {"invitation": invitation, **extra}
        if invitation is None:
            context["state"] = "invalid"
            status = 404
        elif invitation.status != InvitationStatus.PENDING:
            context["state"] = invitation.status
            status = 410
        else:
            existing = invitee_user(invitation)
            if existing is None:
                context["state"] = "new_account"
                context.setdefault("form", NewAccountForm(email=invitation.email))
            elif request.user.is_authenticated and request.user.pk == existing.pk:
                context["state"] = "join"
            elif request.user.is_authenticated:
                context["state"] = "other_user"
            else:
                context["state"] = "sign_in"
                context["sign_in_url"] = (
                    f"{reverse('login')}?next={reverse('invitation-accept', args=[invitation.pk])}"
                )
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        return self._render(request, self._invitation(request, invitation_id))

    def post(self, request: HttpRequest, invitation_id: str) -> HttpResponse:
        invitation = self._invitation(request, invitation_id)
        if invitation is None or invitation.status != InvitationStatus.PENDING:
            return self._render(request, invitation)
        existing = invitee_user(invitation)
        password = None
        if existing is None:
            form = NewAccountForm(request.POST, email=invitation.email)
            if not form.is_valid():
                return self._render(request, invitation, status=400, form=form)
            password = form.cleaned_data["password1"]
        try:
            membership = invitation_accept(
                invitation=invitation,
                user=request.user if request.user.is_authenticated else None,
                password=password,
                request=request,
            )
        except InvitationError as exc:
            messages.error(request, exc.messages[0])
            invitation.refresh_from_db()  # as the refusal left it (expired, used or revoked)
            return self._render(request, invitation)
        request.session.pop(_LINK, None)
        if existing is None:
            auth_login(
                request, membership.user, backend="django.contrib.auth.backends.ModelBackend"
            )
            request.session[mfa.SESSION_KEY] = mfa.NO_SECOND_FACTOR
        messages.success(request, f"You joined {membership.tenant.name} as {membership.role}.")
        return redirect("runs:dashboard", tenant_slug=membership.tenant.slug)


# --- The tenant's MFA policy ---------------------------------------------------------------


class MfaPolicyView(TenantPageView):
    """Which roles must use MFA: owners change it; admins and auditors read it."""

    allowed_roles = AUDIT_READ_ROLES

    def _render(self, form: MfaPolicyForm, status: int = 200) -> HttpResponse:
        response = self.page(
            "identity/mfa_policy.html",
            form=form,
            required_roles=mfa_required_roles(self.tenant),
            role_choices=Role.choices,
            can_edit=self.membership.role in OWNER_ROLES,
        )
        response.status_code = status
        return response

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(MfaPolicyForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        self.require_roles(OWNER_ROLES)
        form = MfaPolicyForm(request.POST)
        if not form.is_valid():
            return self._render(form, status=400)
        try:
            mfa_policy_set(
                tenant=self.tenant,
                required_roles=form.cleaned_data["required_roles"],
                by=self.by,
                request=request,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
            return self._render(form, status=400)
        messages.success(request, "The MFA policy was saved.")
        return redirect(self.url("identity:mfa-policy"))
