from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.core.apis import WhoAmIView

api_v1: list[URLPattern | URLResolver] = [
    path("", include("apps.metrics.urls")),
    path("", include("apps.vitals.urls")),
    path("whoami", WhoAmIView.as_view(), name="api-whoami"),
    path("", include("apps.resilience.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file, and
    # templates/drf_spectacular/swagger_ui.html drops its inline <style>, so
    # the docs page holds under the strict Content-Security-Policy; only its
    # icons, data: SVG <img>s rendered by swagger-ui-bundle.js, need img-src data:.
    path(
        "docs/",
        csp_update({"img-src": ["'self'", "data:"]})(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
]

admin.site.site_header = "PerfHub administration"
admin.site.site_title = "PerfHub admin"

urlpatterns = [
    path("", include("apps.core.urls")),
    path("vitals/", include(("apps.vitals.urls_html", "vitals"))),
    path("ops/", include(("apps.metrics.urls_html", "metrics"))),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("resilience/", include(("apps.resilience.urls_html", "resilience"))),
    path("api/v1/", include(api_v1)),
]
