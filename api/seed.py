"""Demo data for development (idempotent) and the admin bootstrap used by the CLI.

Everything is keyed by a natural key (package slug, account email) and written with
`$setOnInsert`, so seeding twice changes nothing and never undoes an admin's edits.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from pymongo.asynchronous.database import AsyncDatabase

from core.jsonutil import iso
from core.settings import Settings

logger = logging.getLogger(__name__)

DEMO_CUSTOMER_EMAIL = "customer@partypilot.local"
DEMO_PARTNER_COUNT = 12

# Called with how many records were just checked or written: the CLI draws a progress bar with it.
Advance = Callable[[int], None]


def _unobserved(count: int) -> None:
    """The default `Advance`: nobody is watching."""


async def ensure_admin(db: AsyncDatabase[dict[str, Any]], email: str, name: str = "Administrator") -> str:
    """Create the admin account for `email`, or promote the existing account. Returns its id."""
    email = email.strip().lower()
    existing = await db.users.find_one({"email": email}, {"_id": 1})
    if existing is not None:
        await db.users.update_one({"_id": existing["_id"]}, {"$set": {"role": "admin"}})
        return str(existing["_id"])
    user_id = uuid.uuid4().hex
    await db.users.insert_one({"_id": user_id, "role": "admin", "email": email, "name": name,
                               "created_at": iso(), "deleted": 0})
    return user_id


class _Pkg(NamedTuple):
    name: str
    price_inr: int
    capacity: int
    duration_min: int
    tags: tuple[str, ...]
    features: tuple[str, ...]
    description: str


# Prices in whole rupees here; stored in paise. Images: one offline SVG per category.
PACKAGES: dict[str, tuple[_Pkg, ...]] = {
    "Kids": (
        _Pkg("Jungle Safari Birthday", 14_999, 30, 180, ("birthday", "animals", "outdoor"),
             ("Jungle-theme backdrop", "Balloon arch", "Safari hats for kids", "Host and games"),
             "A jungle adventure for little explorers: themed décor, games and a friendly host."),
        _Pkg("Princess Castle Party", 18_499, 25, 180, ("birthday", "princess", "girls"),
             ("Castle backdrop", "Tiara and wand kits", "Pastel balloon garland", "Cake table styling"),
             "A fairy-tale castle setting with crowns, wands and a pastel balloon garland."),
        _Pkg("Superhero Training Camp", 16_999, 30, 150, ("birthday", "superhero", "active"),
             ("Obstacle course", "Capes and masks", "Hero certificates", "Photo wall"),
             "Capes on! An obstacle course and hero missions that keep every child moving."),
        _Pkg("Magic Show Extravaganza", 12_999, 50, 90, ("magic", "show", "birthday"),
             ("45-minute magic show", "Balloon modelling", "Sound system"),
             "A professional magician with a stage show, audience tricks and balloon art."),
        _Pkg("Baby Shower Bliss", 21_999, 40, 180, ("baby shower", "pastel", "family"),
             ("Floral backdrop", "Pastel décor", "Games kit", "Welcome board"),
             "Soft pastels, flowers and gentle games to welcome the little one."),
        _Pkg("Unicorn Dreams Party", 15_499, 25, 150, ("birthday", "unicorn", "rainbow"),
             ("Rainbow balloon arch", "Unicorn headbands", "Glitter tattoo station"),
             "Rainbows, glitter and unicorns: a sparkling party for dreamers."),
    ),
    "Weddings": (
        _Pkg("Royal Mandap Décor", 249_999, 500, 480, ("wedding", "mandap", "traditional"),
             ("Carved mandap", "Marigold and rose garlands", "Stage lighting", "Entrance arch"),
             "A grand carved mandap with fresh marigold and rose garlands and warm stage light."),
        _Pkg("Mehendi Garden Setup", 64_999, 150, 300, ("mehendi", "floral", "outdoor"),
             ("Floral swings", "Low seating with bolsters", "Fairy lights", "Colourful umbrellas"),
             "Swings, cushions and colour for a joyful mehendi afternoon."),
        _Pkg("Sangeet Night Stage", 89_999, 300, 360, ("sangeet", "music", "stage"),
             ("LED stage", "DJ console", "Dance floor", "Moving head lights"),
             "A lit stage and dance floor so every family can perform at the sangeet."),
        _Pkg("Haldi Sunshine Décor", 39_999, 120, 240, ("haldi", "yellow", "floral"),
             ("Marigold backdrop", "Brass urli arrangements", "Seating for elders"),
             "Sunny marigolds and brass for a bright, traditional haldi."),
        _Pkg("Reception Elegance", 179_999, 400, 420, ("reception", "elegant", "lighting"),
             ("Couple stage", "Crystal chandeliers", "Table centrepieces", "Photo booth"),
             "Chandeliers, a couple's stage and elegant centrepieces for the reception."),
        _Pkg("Intimate Court Wedding Brunch", 44_999, 50, 240, ("wedding", "intimate", "brunch"),
             ("Long-table styling", "Floral centrepieces", "Welcome signage"),
             "A calm, beautiful brunch setup for a small wedding celebration."),
    ),
    "Corporate": (
        _Pkg("Product Launch Stage", 149_999, 300, 360, ("launch", "stage", "av"),
             ("LED wall", "PA system", "Branded backdrop", "Stage manager"),
             "An LED wall, sound and branding for a product launch that lands."),
        _Pkg("Annual Day Celebration", 199_999, 600, 480, ("annual day", "awards", "stage"),
             ("Awards stage", "Trophy table", "Lighting rig", "Anchor coordination"),
             "Stage, lights and an awards flow for the company's biggest day."),
        _Pkg("Team Offsite Day", 74_999, 80, 480, ("offsite", "team building", "outdoor"),
             ("Team games kit", "Facilitator", "Shaded seating", "Sound system"),
             "Facilitated games and breakout spaces for a day out of the office."),
        _Pkg("Conference Breakout Setup", 54_999, 120, 480, ("conference", "seminar", "av"),
             ("Theatre seating", "Projector and screen", "Wireless mics", "Registration desk"),
             "Seating, projection and microphones for a smooth conference day."),
        _Pkg("Diwali Office Party", 59_999, 200, 240, ("diwali", "office", "festive"),
             ("Diya and lantern décor", "Rangoli", "DJ", "Photo corner"),
             "Lanterns, rangoli and music to bring the festival into the office."),
        _Pkg("Client Cocktail Evening", 94_999, 120, 240, ("cocktail", "networking", "evening"),
             ("Lounge furniture", "Ambient lighting", "Bar styling", "Live acoustic duo"),
             "A lounge setting with soft light and live music for client evenings."),
    ),
    "Casual": (
        _Pkg("Rooftop Sundowner", 24_999, 40, 240, ("rooftop", "evening", "friends"),
             ("Fairy lights", "Lounge cushions", "Bluetooth speakers", "Bar table"),
             "Fairy lights and cushions for a relaxed evening above the city."),
        _Pkg("Backyard BBQ Bash", 19_999, 40, 240, ("bbq", "outdoor", "friends"),
             ("Grill station setup", "Picnic tables", "Games kit", "String lights"),
             "Grill, tables and games for a laid-back backyard party."),
        _Pkg("Game Night Deluxe", 9_999, 20, 180, ("games", "indoor", "friends"),
             ("Board game library", "Projector for console games", "Snack bar styling"),
             "Board games, a big screen and snacks for a competitive night in."),
        _Pkg("Housewarming Welcome", 17_999, 50, 240, ("housewarming", "family", "floral"),
             ("Entrance torans", "Floral arrangements", "Pooja setup", "Welcome board"),
             "Torans, flowers and a pooja setup to bless the new home."),
        _Pkg("Anniversary Candlelight Dinner", 14_499, 2, 180, ("anniversary", "romantic", "dinner"),
             ("Candle pathway", "Rose petals", "Private table styling", "Violinist (30 min)"),
             "Candles, roses and a violinist for an evening for two."),
        _Pkg("Karaoke Night", 13_999, 30, 180, ("karaoke", "music", "friends"),
             ("Karaoke system with two wireless mics", "Songs in Hindi, Kannada, Tamil and English",
              "Mini stage with lights", "Lyrics screen"),
             "Two mics, a big lyrics screen and a little stage for a night of singing with friends."),
        _Pkg("Movie Night Under the Stars", 12_499, 30, 180, ("movie", "outdoor", "family"),
             ("Outdoor screen and projector", "Bean bags", "Popcorn cart"),
             "A big outdoor screen, bean bags and popcorn under the open sky."),
    ),
    "Festival": (
        _Pkg("Diwali Lights & Rangoli", 22_999, 60, 240, ("diwali", "lights", "rangoli"),
             ("Rangoli artist", "Diya arrangements", "Lantern canopy", "Fairy-light facade"),
             "Rangoli, diyas and a canopy of lanterns for a glowing Diwali."),
        _Pkg("Holi Colour Carnival", 34_999, 150, 300, ("holi", "colours", "outdoor"),
             ("Organic colours", "Rain dance setup", "DJ", "Thandai counter styling"),
             "Organic colours, a rain dance and a DJ for a safe, happy Holi."),
        _Pkg("Ganesh Chaturthi Pandal", 49_999, 200, 480, ("ganesh", "pandal", "traditional"),
             ("Pandal structure", "Floral décor", "Aarti sound system", "Lighting"),
             "A decorated pandal with flowers, light and sound for the festival days."),
        _Pkg("Navratri Garba Night", 69_999, 300, 360, ("navratri", "garba", "dandiya"),
             ("Dandiya sticks", "Dhol players", "Circular dance floor", "Festive lighting"),
             "Dhol, dandiya and a big circle of light for a night of garba."),
        _Pkg("Christmas Wonderland", 27_999, 80, 240, ("christmas", "winter", "family"),
             ("Decorated tree", "Santa visit", "Snow machine", "Gift corner"),
             "A decorated tree, a visit from Santa and a little snow in Bengaluru."),
        _Pkg("Onam Pookalam Celebration", 18_999, 80, 240, ("onam", "pookalam", "traditional"),
             ("Pookalam artist", "Banana-leaf seating setup", "Traditional lamps"),
             "A flower pookalam, lamps and seating for a traditional Onam sadya."),
    ),
    "Themed": (
        _Pkg("Bollywood Retro Night", 44_999, 120, 300, ("bollywood", "retro", "music"),
             ("Retro posters", "Disco ball", "DJ with retro set", "Costume props"),
             "Posters, a disco ball and golden-era hits for a filmy night."),
        _Pkg("Great Gatsby Soirée", 79_999, 150, 300, ("gatsby", "1920s", "glam"),
             ("Art-deco décor", "Champagne tower styling", "Jazz trio", "Feather props"),
             "Art-deco glamour, a jazz trio and a champagne tower for a roaring night."),
        _Pkg("Neon Glow Party", 29_999, 80, 240, ("neon", "glow", "dance"),
             ("UV lighting", "Glow sticks and paint", "DJ", "Neon signs"),
             "UV light, glow paint and neon signs for a party that shines."),
        _Pkg("Boho Picnic", 15_999, 20, 180, ("boho", "picnic", "outdoor"),
             ("Low tables and rugs", "Pampas décor", "Picnic baskets", "Canopy"),
             "Rugs, pampas grass and a canopy for a dreamy afternoon picnic."),
        _Pkg("Casino Royale Night", 59_999, 100, 300, ("casino", "glam", "games"),
             ("Poker and roulette tables", "Dealers", "Play money", "Red-carpet entry"),
             "Tables, dealers and a red carpet for a glamorous (play-money) casino night."),
        _Pkg("Arabian Nights Lounge", 54_999, 100, 300, ("arabian", "lounge", "lanterns"),
             ("Moroccan lanterns", "Low majlis seating", "Belly dancer", "Hookah-style lounge décor"),
             "Lanterns, low seating and a belly dancer for a night in the desert."),
    ),
}

PARTNER_FIRST_NAMES = ("Arjun", "Priya", "Rahul", "Sneha", "Vikram", "Ananya", "Karthik", "Divya",
                       "Rohan", "Meera", "Suresh", "Lakshmi")
PARTNER_SURNAMES = ("Rao", "Sharma", "Iyer", "Nair", "Reddy", "Menon", "Gowda", "Shetty", "Kumar",
                    "Pillai", "Hegde", "Bhat")
VEHICLES = ("van", "car", "truck", "bike")


def slug_of(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def package_image(category: str) -> str:
    return f"/img/packages/{category.lower()}.svg"


async def seed_packages(db: AsyncDatabase[dict[str, Any]], currency: str, advance: Advance = _unobserved) -> int:
    """Insert the demo packages that are missing. Returns how many were added."""
    added = 0
    for index, (category, packages) in enumerate(PACKAGES.items()):
        for position, pkg in enumerate(packages):
            # Spread creation times so "newest" has a stable, meaningful order.
            created = f"2026-01-{index * 4 + 1:02d}T{9 + position:02d}:00:00.000Z"
            doc = {"_id": uuid.uuid4().hex, "name": pkg.name, "slug": slug_of(pkg.name),
                   "description": pkg.description, "category": category, "tags": list(pkg.tags),
                   "price": pkg.price_inr * 100, "currency": currency, "capacity": pkg.capacity,
                   "duration_min": pkg.duration_min, "features": list(pkg.features),
                   "images": [package_image(category)], "active": 1, "rating_count": 0,
                   "created_at": created, "updated_at": created}
            slug = doc.pop("slug")
            result = await db.packages.update_one({"slug": slug}, {"$setOnInsert": doc}, upsert=True)
            added += 1 if result.upserted_id is not None else 0
            advance(1)
    return added


async def _ensure_user(db: AsyncDatabase[dict[str, Any]], email: str, role: str, name: str,
                       phone: str) -> str:
    existing = await db.users.find_one({"email": email}, {"_id": 1})
    if existing is not None:
        return str(existing["_id"])
    user_id = uuid.uuid4().hex
    await db.users.insert_one({"_id": user_id, "role": role, "email": email, "phone": phone, "name": name,
                               "addresses": [], "created_at": iso(), "deleted": 0})
    return user_id


async def seed_partners(db: AsyncDatabase[dict[str, Any]], advance: Advance = _unobserved) -> list[str]:
    """partner1@partypilot.local .. partner12@: approved partners with first names and phones."""
    ids = []
    for n in range(1, DEMO_PARTNER_COUNT + 1):
        first, last = PARTNER_FIRST_NAMES[n - 1], PARTNER_SURNAMES[n - 1]
        email = f"partner{n}@partypilot.local"
        phone = f"+9198450{n:05d}"
        user_id = await _ensure_user(db, email, "partner", f"{first} {last}", phone)
        now = iso()
        await db.partners.update_one({"_id": user_id}, {"$setOnInsert": {
            "company_name": f"{last} Party Services", "contact_name": f"{first} {last}", "first_name": first,
            "email": email, "phone": phone, "vehicle_type": VEHICLES[n % len(VEHICLES)],
            "service_area": "Bengaluru Central", "status": "approved", "created_at": now, "status_at": now,
        }}, upsert=True)
        ids.append(user_id)
        advance(1)
    return ids


def seed_record_count(settings: Settings) -> int:
    """How many records `seed_demo_data` checks or writes, and so reports to its `advance`."""
    admin = 1 if settings.is_development else 0
    return admin + sum(len(packages) for packages in PACKAGES.values()) + DEMO_PARTNER_COUNT + 1


async def seed_demo_data(db: AsyncDatabase[dict[str, Any]], settings: Settings,
                         advance: Advance = _unobserved) -> None:
    """Idempotent demo data; the dev admin identity comes from settings."""
    if settings.is_development:
        await ensure_admin(db, settings.dev_admin_email)
        advance(1)
    added = await seed_packages(db, settings.currency, advance)
    await seed_partners(db, advance)
    await _ensure_user(db, DEMO_CUSTOMER_EMAIL, "customer", "Asha Customer", "+919845099999")
    advance(1)
    logger.info("demo data is in place (%d new packages)", added)
