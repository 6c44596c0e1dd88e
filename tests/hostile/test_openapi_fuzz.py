"""Schemathesis against the running API's own OpenAPI document.

Every operation gets ``EXAMPLES`` requests that fit its schema (with the fuzz user's id in the
path, so they reach the handler rather than stop at 403) and ``EXAMPLES`` that do not, all with a
user's token. Whatever arrives, no response may be a 5xx, every response must have the content
type and shape the document promises, and none may wait out the command timeout (the API accepted
a command its worker then refused: the client is told "pending" for good). Schemathesis's Python
API drives the live URL: its pytest plug-in wants the schema at import time, before the module's
stack exists.

Nothing is excluded: the module has a stack of its own, and a user token can erase only its own
data (``DELETE /v1/users/{id}``) or is refused the admin routes.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api.commands import COMMAND_TIMEOUT_S
from tests.hostile.fuzz import fresh_seed
from tests.hostile.kit import Stack, admin_headers, honest_event_applied, user_headers

# The API and Redis are under attack here, not the broker: Apache Kafka only.
pytestmark = [pytest.mark.integration, pytest.mark.one_broker]

EXAMPLES = int(os.environ.get("ELIMU_OPENAPI_EXAMPLES", "25"))
FUZZ_USER = "openapi-fuzz"
#: Slow answers after which an operation's remaining cases are skipped (each costs 5 s).
SLOW_ENOUGH = 2
CHECKS = [not_a_server_error, content_type_conformance, response_schema_conformance]


def fuzz_operation(
    strategy: Any,
    label: str,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    statuses: Counter[int],
    run_seed: int,
) -> list[str]:
    """Send ``EXAMPLES`` cases drawn from ``strategy``; a failed check is kept and the next case
    still runs (nothing is shrunk: the message names the case)."""
    failures: list[str] = []
    slow: list[Any] = []

    @seed(run_seed)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def probe(case: Any) -> None:
        if len(slow) >= SLOW_ENOUGH:
            return  # this operation is already reported; more 5 s waits would prove nothing new
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        if response.elapsed >= COMMAND_TIMEOUT_S:
            # The API waited out a worker answer that never came: the worker refused (dead-
            # lettered) a command the API had accepted, and the client is told "pending" forever.
            slow.append(case)
            failures.append(
                f"{label}: {response.status_code} after {response.elapsed:.1f}s "
                f"(no worker answer) for body {case.body!r:.200}"
            )
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except Exception as exc:  # one or more checks failed for this case
            first = " | ".join(str(exc).strip().splitlines()[:6])
            failures.append(f"{label}: {response.status_code} {first}")

    # Unsatisfiable: nothing to make invalid (no parameters or body, in negative mode).
    with contextlib.suppress(Unsatisfiable):
        probe()
    return failures


@pytest.mark.timeout(300)
async def test_no_operation_answers_5xx_or_off_schema(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    headers = user_headers(FUZZ_USER)
    run_seed = int(os.environ.get("ELIMU_FUZZ_SEED") or fresh_seed())
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    session = requests.Session()
    for result in schema.get_all_operations():
        # An operation the document describes so badly that it cannot be generated is a failure.
        assert isinstance(result, Ok), f"unusable operation in the OpenAPI document: {result.err()}"
        operation = result.ok()
        operations += 1
        params = {p.name for p in operation.path_parameters}
        fixed = {"user_id": FUZZ_USER} if "user_id" in params else None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                generation_mode=mode,
                headers=headers,
                path_parameters=fixed if mode is GenerationMode.POSITIVE else None,
            )
            label = f"{mode.value} {operation.label}"

            failures += fuzz_operation(strategy, label, stack.url, session, headers, statuses, run_seed)
    stack.assert_alive()
    assert operations >= 30, f"only {operations} operations in the OpenAPI document"
    unique = sorted(set(failures))
    assert not unique, f"seed {run_seed}, {len(unique)} distinct failures:\n" + "\n".join(unique[:30])
    assert not [s for s in statuses if s >= 500], statuses
    print(f"{operations} operations, seed {run_seed}, statuses {dict(sorted(statuses.items()))}")
    async with httpx.AsyncClient(base_url=stack.url, timeout=15) as http:
        await honest_event_applied(stack, http)


BAD_BODY_IDS = [
    ("/v1/rewards/redeem", False, {"perk_id": "streak_freeze", "request_id": "r\u0000"}),
    ("/v1/rewards/redeem", False, {"perk_id": "streak_freeze\u200b", "request_id": "r-1"}),
    # 40 characters, 160 bytes of UTF-8: within a character limit, over the byte budget.
    ("/v1/rewards/redeem", False, {"perk_id": "streak_freeze", "request_id": "\U0001d49c" * 40}),
    pytest.param(
        "/v1/admin/rewards/grant",
        True,
        {"user_id": "u-1", "amount": 10, "reason": "thanks", "grant_id": "g\u0007"},
    ),
    pytest.param(
        "/v1/admin/rewards/grant",
        True,
        {"user_id": "u\u2028x", "amount": 10, "reason": "thanks", "grant_id": "g-1"},
    ),
]


@pytest.mark.parametrize(("route", "admin", "body"), BAD_BODY_IDS)
async def test_an_id_in_a_command_body_is_checked_at_the_api(
    stack: Stack, route: str, admin: bool, body: dict[str, Any]
) -> None:
    """Ids in a command's body obey the id rule at the API (422 at once), as path and query ids
    do: forwarded, the worker refuses the command and the client waits out the command timeout
    for a "pending" that never resolves."""
    headers = admin_headers() if admin else user_headers(FUZZ_USER)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        r = await http.post(route, headers=headers, json=body)
    assert r.status_code == 422, (r.status_code, r.text, f"{r.elapsed.total_seconds():.1f}s")
