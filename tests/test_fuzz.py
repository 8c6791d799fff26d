"""schemathesis over /api/openapi.json, against the whole product on a real loopback port.

Every check that applies: no 5xx, every status documented, every error in the envelope and every
response matching its documented schema, invalid input refused, auth not ignored, 405s naming
what is allowed, and the stateful phase following the document's links. Customer operations are
fuzzed with a customer's token, /api/admin/* with an admin's and /api/partner/* with an approved
partner's (tests/fuzz.toml), each with real identifiers so requests reach the handlers' rules.

`make test` runs a short, seeded pass; `make fuzz` a long one (FUZZ_MAX_EXAMPLES per operation,
FUZZ_MIN_CASES asserted, FUZZ_SEED to replay a run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from core.tokens import issue_access_token, issue_tracking_token
from partypilot import localservices
from tests.conftest import TEST_SECRET, _uris
from tests.helpers import make_order, make_package, make_partner, make_user, offer_to
from tests.live_server import LiveServer

CONFIG = Path(__file__).with_name("fuzz.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# positive_data_acceptance is the one check left out: schema-valid data is refused by design when
# it breaks a rule no schema can state (an unknown package id, a venue outside every service area).
EXCLUDED_CHECKS = "positive_data_acceptance"
# Signing out would end the fuzzing customer's session half-way; the matrix covers logout.
EXCLUDED_OPERATIONS = ("logout",)

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "5"))
# make test skips the coverage phase (thousands of boundary cases, over a minute here); make fuzz runs it.
PHASES = os.environ.get("FUZZ_PHASES", "fuzzing,stateful")
MIN_CASES = int(os.environ.get("FUZZ_MIN_CASES", "300"))
SEED = os.environ.get("FUZZ_SEED", "20261203")  # fixed in make test, so a failure replays
WORKERS = os.environ.get("FUZZ_WORKERS", "1")
RUN_TIMEOUT_S = float(os.environ.get("FUZZ_TIMEOUT_S", "900"))


@pytest.fixture(scope="module")
def live(services: localservices.LocalServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    mongo_uri, redis_url = _uris(services)
    settings = Settings.model_validate({
        "env": "test", "mongodb_uri": mongo_uri, "redis_url": redis_url, "mongodb_db": f"t_{uuid.uuid4().hex[:12]}",
        "jwt_secret": TEST_SECRET, "data_dir": tmp_path_factory.mktemp("fuzz") / "data", "log_level": "ERROR"})
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def _seed(live: LiveServer) -> dict[str, str]:
    """The callers and resources tests/fuzz.toml names, as environment variables for schemathesis."""

    async def seed() -> dict[str, str]:
        db, settings = live.db, live.settings
        customer, admin = await make_user(db), await make_user(db, "admin")
        partner, applicant = await make_partner(db), await make_partner(db, "pending")
        package = await make_package(db)
        order = await make_order(db, customer, package)
        offered = await make_order(db, customer, package)
        await offer_to(db, offered, [partner], ttl_ms=3_600_000)
        payment = uuid.uuid4().hex
        await db.payments.insert_one({
            "_id": payment, "order_id": order, "customer_id": customer, "provider": "simulated", "kind": "full",
            "status": "succeeded", "amount": 1_500_000, "currency": "INR", "amount_refunded": 0,
            "provider_payment_id": f"sim_pi_{payment}", "charge_id": f"sim_ch_{payment}", "refunds": [],
            "history": [], "version": 1, "applied": 1, "created_at": "2026-01-01T00:00:00.000Z"})
        token, _ = issue_tracking_token(settings, order)

        def bearer(user_id: str, role: str) -> str:
            return issue_access_token(settings, user_id, role, uuid.uuid4().hex)  # type: ignore[arg-type]

        return {
            "PP_FUZZ_CUSTOMER_TOKEN": bearer(customer, "customer"), "PP_FUZZ_ADMIN_TOKEN": bearer(admin, "admin"),
            "PP_FUZZ_PARTNER_TOKEN": bearer(partner, "partner"), "PP_FUZZ_ORDER_ID": order,
            "PP_FUZZ_OFFER_ID": offered, "PP_FUZZ_PACKAGE_ID": package, "PP_FUZZ_PARTNER_ID": applicant,
            "PP_FUZZ_PAYMENT_ID": payment, "PP_FUZZ_TRACKING_TOKEN": token,
        }

    return live.run(seed())


def run_schemathesis(live: LiveServer, env: dict[str, str], report_dir: Path) -> tuple[int, str, float]:
    args = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", f"{live.url}/api/openapi.json",
            "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS, "--phases", PHASES,
            "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", WORKERS, "--request-timeout", "30",
            "--report", "junit", "--report-dir", str(report_dir)]
    for operation in EXCLUDED_OPERATIONS:
        args += ["--exclude-operation-id", operation]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, **env, "SCHEMATHESIS_TELEMETRY": "false"}, check=False,
                          cwd=report_dir)  # its .schemathesis cache lands there, not in the work tree
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_schemathesis_finds_no_error_over_the_whole_api(live: LiveServer, tmp_path: Path) -> None:
    rc, output, seconds = run_schemathesis(live, _seed(live), tmp_path)
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-4000:]
    generated = re.search(r"(\d+) generated", summary)
    cases = int(generated.group(1)) if generated else 0
    print(f"\nschemathesis: {cases} cases in {seconds:.0f} s (phases {PHASES}, {MAX_EXAMPLES} examples per operation, "
          f"seed {SEED})")
    assert rc == 0, output[-30_000:]
    assert cases >= MIN_CASES, summary
