"""The example served over ASGI (``uvicorn project.asgi:application``): Django, and
pgqueue's dashboard at /pgqueue/ for staff signed in through the admin."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_asgi_application()  # sets Django up: before pgqueue's imports

from pgqueue.contrib.django.dashboard import with_dashboard  # noqa: E402

application = with_dashboard(django_application, path="/pgqueue")
