from django.urls import path

from swrly.evidence import views

app_name = "evidence"

urlpatterns = [
    path("", views.EvidenceBundleView.as_view(), name="bundle"),
    path("verify_evidence.py", views.VerifierDownloadView.as_view(), name="verifier"),
]
