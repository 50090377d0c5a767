"""Settings of the example project: the database is ``$PGQUEUE_DATABASE_URL`` (a
PostgreSQL URL), which pgqueue's queue object then uses too."""

import os
from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured
from psycopg.conninfo import conninfo_to_dict

_url = os.environ.get("PGQUEUE_DATABASE_URL") or os.environ.get("DATABASE_URL")
if not _url:
    raise ImproperlyConfigured("set PGQUEUE_DATABASE_URL to a PostgreSQL URL")
_db = conninfo_to_dict(_url)

SECRET_KEY = "example-only-not-secret"  # an example's: never deploy it
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pgqueue.contrib.django",
    "orders",
]
if django.VERSION < (6, 0):  # the backport of django.tasks
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
# The staff sign in through the admin, for it and for pgqueue's dashboard (project/asgi.py).
LOGIN_URL = "/admin/login/"

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}

PGQUEUE = {
    "SCHEMA": os.environ.get("PGQUEUE_SCHEMA", "pgqueue"),
    "OPTIONS": {"pool_min_size": 0, "pool_max_size": 4},
    "WORKER": {"local_concurrency": 10, "threads": 4, "shutdown_timeout": 10.0},
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.contrib.django.tasks.PgQueueBackend",
        "QUEUES": ["default", "slow"],
    }
}
TEST_RUNNER = "pgqueue.contrib.django.test.PgQueueDiscoverRunner"
