"""Bench data: accounts, partners, the catalog, service-area points and access tokens.

Rows follow the shared data model (users, partners, packages); bulk inserts use `insert_many`
because the wire server manages about 1,700 single inserts a second.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from core.jsonutil import iso
from core.settings import Settings
from core.tokens import Role, issue_access_token
from partypilot import progress

AREAS_FILE = Path(__file__).resolve().parent.parent / "geo" / "data" / "service_areas.geojson"
# Used only when the bundled service areas are missing: central Bengaluru.
_FALLBACK_CENTER = (12.9716, 77.5946)
CATEGORIES = ("Kids", "Weddings", "Corporate", "Casual", "Festival", "Themed")
INSERT_CHUNK = 1000


@dataclass(frozen=True)
class Area:
    """Where simulated partners and orders live: a service-area polygon's centre and extent."""

    name: str
    center_lat: float
    center_lng: float
    radius_m: float
    ring: tuple[tuple[float, float], ...] = ()  # (lng, lat) polygon ring, empty when unknown

    def contains(self, lat: float, lng: float) -> bool:
        if not self.ring:
            return True
        return _point_in_ring(lng, lat, self.ring)

    def random_point(self, rng: random.Random, within_m: float | None = None) -> tuple[float, float]:
        """A uniformly spread point within `within_m` of the centre (and inside the polygon)."""
        limit = min(within_m or self.radius_m, self.radius_m)
        for _ in range(1000):
            lat, lng = offset(self.center_lat, self.center_lng, limit * math.sqrt(rng.random()),
                              rng.uniform(0, 2 * math.pi))
            if self.contains(lat, lng):
                return lat, lng
        return self.center_lat, self.center_lng


def offset(lat: float, lng: float, distance_m: float, bearing_rad: float) -> tuple[float, float]:
    """The point `distance_m` away on `bearing_rad` (flat-earth, fine below a few dozen km)."""
    dlat = distance_m * math.cos(bearing_rad) / 111_320.0
    dlng = distance_m * math.sin(bearing_rad) / (111_320.0 * math.cos(math.radians(lat)))
    return lat + dlat, lng + dlng


def _point_in_ring(x: float, y: float, ring: tuple[tuple[float, float], ...]) -> bool:
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def load_area(path: Path = AREAS_FILE) -> Area:
    """The first service area of the bundled GeoJSON: its vertex centroid and inscribed-ish radius."""
    if not path.is_file():
        return Area("fallback", *_FALLBACK_CENTER, radius_m=8000.0)
    data = json.loads(path.read_text(encoding="utf-8"))
    feature = data["features"][0] if data.get("type") == "FeatureCollection" else data
    geometry = feature["geometry"]
    coords = geometry["coordinates"][0] if geometry["type"] == "Polygon" else geometry["coordinates"][0][0]
    ring = tuple((float(x), float(y)) for x, y in coords)
    lng = sum(x for x, _ in ring[:-1]) / (len(ring) - 1)
    lat = sum(y for _, y in ring[:-1]) / (len(ring) - 1)
    # Distance to the nearest vertex, shrunk: points within it stay well inside a convex-ish polygon.
    nearest = min(math.dist((lat, lng * math.cos(math.radians(lat))), (y, x * math.cos(math.radians(lat))))
                  for x, y in ring) * 111_320.0
    name = str((feature.get("properties") or {}).get("name") or "area")
    return Area(name, lat, lng, radius_m=nearest * 0.6, ring=ring)


def bench_settings(secret: str) -> Settings:
    """Settings that only serve to mint tokens the app will accept (same secret)."""
    return Settings.model_validate({"env": "test", "jwt_secret": secret})


def mint(settings: Settings, user_id: str, role: Role, ttl_s: int | None = None) -> str:
    """An access token as sign-in would issue it; `ttl_s` outlives the 15-minute default for long runs."""
    if ttl_s is not None:
        settings = settings.model_copy(update={"access_token_ttl_s": ttl_s})
    return issue_access_token(settings, user_id, role, session_id=f"bench-{uuid.uuid4().hex[:12]}")


async def _insert(db: AsyncDatabase[dict[str, Any]], name: str, docs: list[dict[str, Any]], title: str) -> None:
    """Insert in chunks, with a progress bar on a terminal: thousands of identities take seconds."""
    with progress.step(title, total=len(docs), unit="documents") as advance:
        for start in range(0, len(docs), INSERT_CHUNK):
            chunk = docs[start:start + INSERT_CHUNK]
            await db[name].insert_many(chunk, ordered=False)
            advance(len(chunk))


async def create_users(db: AsyncDatabase[dict[str, Any]], role: Role, count: int, tag: str) -> list[str]:
    """`count` accounts of `role`, returning their ids."""
    now = iso()
    ids = [uuid.uuid4().hex for _ in range(count)]
    docs = [{"_id": uid, "role": role, "email": f"{tag}-{n}@bench.partypilot.local", "name": f"Bench {role} {n}",
             "addresses": [], "created_at": now, "deleted": 0} for n, uid in enumerate(ids)]
    await _insert(db, "users", docs, f"creating load-test {role} accounts")
    return ids


async def create_partners(db: AsyncDatabase[dict[str, Any]], count: int, tag: str,
                          with_users: bool = True) -> list[str]:
    """`count` approved partners (users + partners documents)."""
    now = iso()
    ids = await create_users(db, "partner", count, tag) if with_users else [uuid.uuid4().hex for _ in range(count)]
    vehicles = ("bike", "car", "van", "truck")
    docs = [{"_id": pid, "company_name": f"Bench Events {n}", "contact_name": f"Partner {n}",
             "first_name": f"Partner{n}", "email": f"{tag}-{n}@bench.partypilot.local",
             "phone": f"+9198{n:08d}", "vehicle_type": vehicles[n % 4], "status": "approved",
             "created_at": now, "status_at": now} for n, pid in enumerate(ids)]
    await _insert(db, "partners", docs, "creating load-test partner profiles")
    return ids


async def ensure_catalog(db: AsyncDatabase[dict[str, Any]], settings: Settings) -> int:
    """The product's own demo catalog when its seed provides one, else 34 packages of our own."""
    from api.seed import seed_demo_data

    await seed_demo_data(db, settings.model_copy(update={"env": "development"}))
    active = await db.packages.count_documents({"active": 1})
    if active:
        return active
    now = iso()
    rng = random.Random(34)
    docs = []
    for n in range(34):
        category = CATEGORIES[n % len(CATEGORIES)]
        docs.append({
            "_id": uuid.uuid4().hex, "name": f"{category} package {n + 1}", "slug": f"{category.lower()}-{n + 1}",
            "description": f"A {category.lower()} party package for the benchmark, number {n + 1}.",
            "category": category, "tags": [category.lower(), "bench"], "price": rng.randrange(500_000, 5_000_000, 100),
            "currency": settings.currency, "capacity": rng.choice((20, 50, 100, 250)),
            "duration_min": rng.choice((120, 180, 240)), "features": ["setup", "cleanup"],
            "images": [f"/media/packages/{n + 1}.jpg"], "active": 1, "rating_count": 0,
            "created_at": now, "updated_at": now,
        })
    await _insert(db, "packages", docs, "creating load-test packages")
    return len(docs)


def write_tokens(path: Path, tokens: dict[str, Any]) -> None:
    """The tokens file Locust reads: {"base_url", "customers": [...], "partners": [...], ...}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tokens, indent=1) + "\n")
    path.chmod(0o600)


def future_date(days: int = 14) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


async def place_and_assign(base_url: str, settings: Settings, area: Area, customers: list[str], admin_id: str,
                           partners: list[tuple[str, float, float]]) -> list[str]:
    """One order per partner, placed by a customer and assigned by an admin over REST (the real path)."""
    import aiohttp

    admin_token = mint(settings, admin_id, "admin")
    out: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(base_url + "/api/packages?limit=100") as resp:
            packages = (await resp.json())["items"]
        for n, (customer, (partner_id, plat, plng)) in enumerate(zip(customers, partners, strict=False)):
            package = packages[n % len(packages)]
            lat, lng = offset(plat, plng, 800, 1.0)
            if not area.contains(lat, lng):
                lat, lng = area.center_lat, area.center_lng
            body = {"package_id": package["id"], "event_date": future_date(),
                    "address": {"line1": f"{n + 1} Track Street", "city": "Bengaluru", "postal_code": "560001",
                                "lat": lat, "lng": lng},
                    "guests": min(5, int(package.get("capacity") or 5)), "notes": "", "payment_option": "cash"}
            headers = {"Authorization": f"Bearer {mint(settings, customer, 'customer')}",
                       "Idempotency-Key": f"track-{uuid.uuid4().hex}"}
            async with session.post(base_url + "/api/orders", json=body, headers=headers) as resp:
                order = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"placing a tracked order failed: {resp.status} {order}")
            order_id = str(order.get("id") or order.get("_id"))
            async with session.put(base_url + f"/api/admin/orders/{order_id}/assign",
                                   json={"partner_id": partner_id, "reason": "load test"},
                                   headers={"Authorization": f"Bearer {admin_token}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"assigning a tracked order failed: {resp.status} {await resp.text()}")
            out.append(order_id)
    return out
