"""Flask app factory with pgqueue: ``POST /signup`` sends a welcome email job, which a
``flask pgqueue worker`` process runs inside the app's context (its handler reads
``current_app.config``); ``GET /jobs/<id>`` shows the job.

    pip install 'pgqueue[flask]'
    export FLASK_PGQUEUE_DSN=postgresql://localhost/mydb    # else $PGQUEUE_DATABASE_URL
    flask --app examples.flask_app run                      # the web app
    flask --app examples.flask_app pgqueue worker           # the workers, as many as needed
    curl -X POST localhost:5000/signup -H 'content-type: application/json' \\
        -d '{"email": "ada@example.com"}'
    curl localhost:5000/jobs/1
"""

from collections.abc import Mapping
from typing import Any

from flask import Flask, request

from .jobs import Welcome, pgqueue, welcome_email


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app, configured from defaults, then ``FLASK_*`` variables, then ``config``."""
    app = Flask(__name__)
    app.config.update(MAIL_SENDER="hello@example.com", SITE_NAME="Example")
    app.config.from_prefixed_env()  # FLASK_PGQUEUE_DSN, FLASK_PGQUEUE_SCHEMA, ...
    app.config.update(config or {})
    pgqueue.init_app(app)

    @app.post("/signup")
    def signup() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True) or {}
        email = body.get("email") if isinstance(body, dict) else None
        if not isinstance(email, str) or "@" not in email:
            return {"error": "give an email address"}, 400
        handle = welcome_email.send(Welcome(email=email))
        return {"job": handle}, 202

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> tuple[dict[str, Any], int]:
        found = pgqueue.queue.get_job_by_id(job_id)
        if found is None:
            return {"error": "no such job"}, 404
        return {"id": found.id, "state": found.state.value, "output": found.output}, 200

    return app
