"""The Flask example's jobs: registered on the extension at import, before any app exists;
each runs inside the app context of the app whose worker runs it."""

from typing import Any

from flask import current_app
from pydantic import BaseModel

from pgqueue import RunningJob
from pgqueue.contrib.flask import PgQueueFlask

pgqueue = PgQueueFlask()  # init_app(app) in the factory


class Welcome(BaseModel):
    email: str


@pgqueue.job("welcome-email", retry_limit=3, expire_in=60)
def welcome_email(data: Welcome, job: RunningJob) -> dict[str, Any]:
    """Write the welcome email (a real app would hand it to its mail server here)."""
    config = current_app.config
    job.log(f"mail for {data.email} from {config['MAIL_SENDER']}")
    return {
        "from": config["MAIL_SENDER"],
        "to": data.email,
        "subject": f"Welcome to {config['SITE_NAME']}",
        "app": current_app.name,
    }
