from django.urls import path

from apps.core import views

app_name = "core"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
]
