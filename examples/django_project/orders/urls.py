"""The orders app's routes."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.create_order),
    path("<int:order_id>/", views.order_status),
]
