"""Two applications that share a schema (``$SHARED_SCHEMA``) and both register a handler for
queue ``send-email``: worker processes run them with ``pgqueue worker``."""

from __future__ import annotations

import os
from typing import Any

from pgqueue import PgQueue

SCHEMA = os.environ.get("SHARED_SCHEMA", "pgqueue")

billing = PgQueue(schema=SCHEMA, app_name="billing", maintenance=False)
crm = PgQueue(schema=SCHEMA, app_name="crm", maintenance=False)


@billing.job("send-email", retry_limit=5)
def send_invoice_email(data: Any) -> str:
    return "billing"


@crm.job("send-email")
def send_crm_email(data: Any) -> str:
    return "crm"
