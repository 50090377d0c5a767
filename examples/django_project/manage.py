#!/usr/bin/env python
"""Django's command line for the example project (``python manage.py test``,
``python manage.py pgqueue_worker``, ...)."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
