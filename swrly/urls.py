from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from swrly.metrics import metrics_view
from swrly.web.favicon import favicon
from tenants.views import PasswordChangeView, home

urlpatterns = [
    path("", home, name="home"),
    # Sign-in (with the second factor), MFA enrolment, invitation links: swrly/identity.
    path("", include("swrly.identity.account_urls")),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", PasswordChangeView.as_view(), name="password-change"),
    path("t/<slug:tenant_slug>/", include("tenants.urls")),
    path("t/<slug:tenant_slug>/keys/", include("swrly.custody.urls")),
    path("t/<slug:tenant_slug>/evidence/", include("swrly.evidence.urls")),
    path("t/<slug:tenant_slug>/", include("runs.urls")),
    path("t/<slug:tenant_slug>/", include("swrly.identity.urls")),
    path("api/v1/", include("swrly.api")),
    # The admin signs in through the same page as everyone (the second factor included).
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", favicon, name="favicon"),  # METRICS_TOKEN; off while it is unset
]

handler400 = "swrly.web.error_pages.bad_request"
handler404 = "swrly.web.error_pages.not_found"
handler500 = "swrly.web.error_pages.server_error"
