"""``python -m api``: the API on the environment's settings (``elimu api`` is the usual way)."""

from __future__ import annotations

from api.app import run
from infra.settings import Settings

if __name__ == "__main__":
    run(Settings.from_env())
