"""An order, confirmed by a background job."""

from django.db import models


class Order(models.Model):
    email: "models.EmailField[str, str]" = models.EmailField()
    total_cents: "models.PositiveIntegerField[int, int]" = models.PositiveIntegerField()
    confirmed: "models.BooleanField[bool, bool]" = models.BooleanField(default=False)
    note: "models.TextField[str, str]" = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"order {self.pk} ({self.email})"
