"""Signup email: save a user and send their welcome email in the same transaction.

The job exists only if the signup commits: a signup that fails (a duplicate email, invalid
data) sends no email. The data is a pydantic model, checked before anything is written. The
welcome email goes first (priority), survives a flaky mail server (retries with exponential
backoff, a time limit per attempt), and a double click on "resend" sends one email (singleton
key). A follow-up email is deferred by three days.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    python examples/signup_email.py              # $PGQUEUE_DATABASE_URL, else embedded
    pgqueue worker examples.signup_email:pq      # how an application runs these handlers
"""

import asyncio
from datetime import timedelta

import psycopg
from pydantic import BaseModel, Field, ValidationError

from pgqueue import AsyncPgQueue, RunningJob

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL


class Signup(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    first_name: str = Field(min_length=1)


@pq.job(
    "user-signup",
    priority=10,  # before other mail
    retry_limit=5,
    retry_delay=10,
    retry_backoff=True,
    retry_delay_max=600,  # flaky SMTP
    expire_in=60,  # an attempt that hangs for a minute is given up and retried
)
async def send_welcome_email(data: Signup, job: RunningJob) -> str:
    """Send the welcome email of a new user."""
    await deliver(data.email, f"Welcome, {data.first_name}!", job)
    return f"welcome email sent to {data.email}"


@pq.job("followup-email", retry_limit=5, retry_backoff=True)
async def send_followup_email(data: Signup, job: RunningJob) -> str:
    """Ask a user how their first days went."""
    await deliver(data.email, f"How is it going, {data.first_name}?", job)
    return f"follow-up sent to {data.email}"


async def deliver(recipient: str, subject: str, job: RunningJob) -> None:
    """Stands for an SMTP client: the "email" is a row of the sent_email table."""
    async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn:
        await conn.execute(
            "INSERT INTO sent_email (recipient, subject, job_id) VALUES (%s, %s, %s)",
            (recipient, subject, job.id),
        )


async def sign_up(email: str, first_name: str) -> int | None:
    """The signup request: the user row and its emails commit together, or not at all."""
    async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO app_user (email, first_name) VALUES (%s, %s)", (email, first_name)
        )
        signup = Signup(email=email, first_name=first_name)
        await send_followup_email.send_after(signup, timedelta(days=3), conn=conn)
        return await send_welcome_email.send(signup, conn=conn, singleton_key=email)


async def resend_welcome_email(email: str) -> int | None:
    """The "resend" button: while one welcome email to this address is waiting or being
    sent, another click adds nothing (None)."""
    async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn:
        cur = await conn.execute("SELECT first_name FROM app_user WHERE email = %s", (email,))
        (first_name,) = await cur.fetchone() or ("",)
    signup = Signup(email=email, first_name=first_name)
    return await send_welcome_email.send(signup, singleton_key=email)


async def main() -> None:
    async with pq:
        async with await psycopg.AsyncConnection.connect(pq.dsn or "", autocommit=True) as c:
            await c.execute("DROP TABLE IF EXISTS app_user, sent_email")  # a fresh demo
            await c.execute("CREATE TABLE app_user (email text PRIMARY KEY, first_name text)")
            await c.execute("CREATE TABLE sent_email (recipient text, subject text, job_id bigint)")
        print("ada signed up, welcome email job", await sign_up("ada@example.com", "Ada"))
        try:
            await sign_up("ada@example.com", "Ada")
        except psycopg.errors.UniqueViolation:
            print("second signup of ada@example.com failed: no email sent")
        try:
            await sign_up("grace(at)example.com", "Grace")
        except ValidationError:  # the model refused it: the user row rolled back with it
            print("signup with an invalid email refused: no user, no email")
        await pq.work(until_empty=True)  # the welcome email; the follow-up waits three days
        clicks = [await resend_welcome_email("ada@example.com") for _ in range(2)]
        print("resend clicked twice, jobs sent:", sum(c is not None for c in clicks))
        await pq.work(until_empty=True)
        async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn:
            cur = await conn.execute("SELECT recipient, subject FROM sent_email ORDER BY job_id")
            for recipient, subject in await cur.fetchall():
                print(f"sent to {recipient}: {subject}")


if __name__ == "__main__":
    asyncio.run(main())
