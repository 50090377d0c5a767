"""The example's routes (pgqueue's dashboard is served beside them: see project/asgi.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", include("orders.urls")),
]
