"""What the run ran on: machine, load, versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

PACKAGES = ("pgqueue", "pgqueuer", "procrastinate", "psycopg", "psycopg-pool", "asyncpg", "uvloop")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(
    server_version: str,
    server_settings: Mapping[str, str] | None = None,
    extra_versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The machine and software of this run; ``extra_versions`` for libraries and runtimes
    that are not Python packages."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions.update(extra_versions or {})
    return {
        "server_settings": dict(server_settings or {}),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {"python": platform.python_version(), "postgresql": server_version, **versions},
    }


def header_lines(meta: dict[str, Any]) -> list[str]:
    """The report's opening lines."""
    m, v = meta["machine"], meta["versions"]
    settings = meta.get("server_settings") or {}
    lines = [
        f"Run {meta['started']} in {meta['duration_s'] / 60:.1f} min: `{meta['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}; "
        f"load average {m['load_average_at_start']} at start, "
        f"{meta['load_average_at_end']} at end",
        f"- PostgreSQL {v['postgresql']} on the same machine; Python {v['python']}",
        "- Libraries: "
        + ", ".join(f"{k} {value}" for k, value in v.items() if k not in ("python", "postgresql")),
    ]
    if settings:
        lines.append(
            "- Server settings: " + ", ".join(f"{k} {value}" for k, value in settings.items())
        )
    if meta.get("commit"):
        lines.append(f"- Commit: {meta['commit']}")
    lines += [f"- Left out: {name}: {why}" for name, why in meta.get("left_out", {}).items()]
    return lines
