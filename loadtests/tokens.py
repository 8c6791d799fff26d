"""Identities for a Locust run against a running system: `python -m loadtests.tokens`.

Creates bench accounts in the system's MongoDB (approved partners, customers, admins; settings
from the environment and .env, like `python -m partypilot`), mints access tokens with the
system's JWT secret, optionally places and assigns orders for tracking customers over REST, and
writes everything to one JSON file (mode 0600) that loadtests/locustfile.py reads.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path
from typing import Any

from loadtests import fixtures

DEFAULT_FILE = Path(".data/bench/tokens.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.tokens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partners", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--admins", type=int, default=10)
    parser.add_argument("--tracked", type=int, default=0,
                        help="orders to place and assign over REST for TrackingCustomerUser (needs --base-url)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--ttl-hours", type=float, default=4.0, help="token lifetime (the app's default is 15 min)")
    parser.add_argument("--out", type=Path, default=DEFAULT_FILE)
    return parser


async def build(args: argparse.Namespace) -> dict[str, Any]:
    from core.stores import make_mongo_client
    from partypilot.cli import load_settings

    settings = load_settings()
    area = fixtures.load_area()
    ttl = int(args.ttl_hours * 3600)
    rng = random.Random()
    tag = f"lt{rng.randrange(16**6):06x}"
    client = make_mongo_client(settings.mongodb_uri)
    try:
        db = client[settings.mongodb_db]
        partners = await fixtures.create_partners(db, args.partners, f"{tag}-partner")
        customers = await fixtures.create_users(db, "customer", max(args.customers, args.tracked), f"{tag}-customer")
        admins = await fixtures.create_users(db, "admin", args.admins, f"{tag}-admin")
    finally:
        await client.close()
    partner_rows: list[dict[str, Any]] = []
    for pid in partners:
        lat, lng = area.random_point(rng)
        partner_rows.append({"id": pid, "token": fixtures.mint(settings, pid, "partner", ttl), "lat": lat, "lng": lng})
    tracked: list[dict[str, Any]] = []
    if args.tracked:
        chosen = partner_rows[:args.tracked]
        order_ids = await fixtures.place_and_assign(args.base_url, settings, area, customers[:args.tracked], admins[0],
                                                    [(p["id"], p["lat"], p["lng"]) for p in chosen])
        tracked = [{"order_id": oid, "partner_id": p["id"], "token": fixtures.mint(settings, c, "customer", ttl)}
                   for oid, p, c in zip(order_ids, chosen, customers, strict=False)]
    return {
        "base_url": args.base_url,
        "partners": partner_rows,
        "customers": [{"id": c, "token": fixtures.mint(settings, c, "customer", ttl)} for c in customers],
        "admins": [{"id": a, "token": fixtures.mint(settings, a, "admin", ttl)} for a in admins],
        "tracked": tracked,
        "points": [list(area.random_point(rng)) for _ in range(200)],
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = asyncio.run(build(args))
    fixtures.write_tokens(args.out, data)
    sys.stdout.write(f"{len(data['partners'])} partners, {len(data['customers'])} customers, "
                     f"{len(data['admins'])} admins, {len(data['tracked'])} tracked orders -> {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
