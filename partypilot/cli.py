"""Command line: run the product, serve it, seed it, manage local services, simulate partners."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.logs import configure_logging
from core.settings import SECRETS_DIR, Settings, SettingsError, env_name
from partypilot import __version__, localservices, progress

logger = logging.getLogger("partypilot")

DEV_REDIS_PORT = 6391
DEV_MONGO_PORT = 27117
LOCAL_SERVICE_NAMES = {"redis": "Redis", "mongo": "nx-27017 (the MongoDB wire server)"}


def load_settings(**overrides: Any) -> Settings:
    """The only place that reads the process environment."""
    return Settings.from_env(os.environ, Path(".env"), SECRETS_DIR, **overrides)


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, json_lines=settings.log_json, secrets=settings.secret_values())


def _serve(settings: Settings) -> None:
    import uvloop
    from aiohttp import web

    from partypilot import gctuning
    from partypilot.app import create_app

    app = create_app(settings)
    gctuning.tune(app)
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None,
                    loop=uvloop.new_event_loop(), access_log=None, shutdown_timeout=5)
    except OSError as exc:
        # Taken between ensure_port_free and here: the same one sentence instead of a traceback.
        if exc.errno == errno.EADDRINUSE:
            raise localservices.PortInUseError(settings.host, settings.port) from None
        raise


def _ensure_port_free(settings: Settings) -> None:
    if settings.port:
        localservices.ensure_port_free(settings.host, settings.port)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(**_overrides(args))
    _configure_logging(settings)
    _ensure_port_free(settings)
    _serve(settings)
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "host", None):
        out["host"] = args.host
    if getattr(args, "port", None):
        out["port"] = args.port
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    """`make run`: local services (unless URIs are configured), demo data, the app, a simulation."""
    settings = load_settings(**_overrides(args))
    _configure_logging(settings)
    # A busy port is said before services start or data is seeded, not after.
    _ensure_port_free(settings)
    services = None
    simulation: subprocess.Popen[bytes] | None = None
    overrides: dict[str, Any] = {}
    # Start locally only what is not configured (environment or .env): a configured MONGODB_URI or
    # REDIS_URL is used as given.
    missing = frozenset(name for name, field in (("mongo", "mongodb_uri"), ("redis", "redis_url"))
                        if getattr(settings, field) == Settings.model_fields[field].default)
    if missing:
        names = " and ".join(LOCAL_SERVICE_NAMES[name] for name in ("redis", "mongo") if name in missing)
        with progress.step(f"starting {names} on loopback"):
            services = localservices.start(settings.data_dir, DEV_REDIS_PORT, DEV_MONGO_PORT, only=missing,
                                           tied=True)
        if "mongo" in missing:
            overrides["mongodb_uri"] = services.mongodb_uri
        if "redis" in missing:
            overrides["redis_url"] = services.redis_url
    # SIGTERM behaves like Ctrl-C so the finally below always stops what we started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = load_settings(**_overrides(args), **overrides)
        asyncio.run(_seed(settings))
        _print_banner(settings)
        if args.simulate and settings.simulate_partners > 0:
            # A separate process, like a real fleet: it retries until the server answers.
            simulation = subprocess.Popen(
                [sys.executable, "-m", "partypilot", "simulate", "--partners", str(settings.simulate_partners),
                 "--url", f"http://127.0.0.1:{settings.port}"],
                env={**os.environ, **{env_name(k): str(v) for k, v in overrides.items()}},
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # we stop it ourselves, after the server, without a traceback
            )
            logger.info("simulating %d partners (make run SIMULATE=0 to switch off)", settings.simulate_partners)
        _serve(settings)
    except KeyboardInterrupt:
        pass
    finally:
        if simulation is not None:
            simulation.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                simulation.wait(timeout=5)
        if services is not None:
            localservices.stop(services)
            logger.info("local services stopped")
    return 0


async def _seed(settings: Settings) -> None:
    from api.seed import seed_demo_data, seed_record_count
    from core.stores import make_mongo_client

    client = make_mongo_client(settings.mongodb_uri)
    try:
        with progress.step("seeding demo data", total=seed_record_count(settings), unit="records") as advance:
            await seed_demo_data(client[settings.mongodb_db], settings, advance)
    finally:
        await client.close()


def cmd_seed(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configure_logging(settings)
    asyncio.run(_seed(settings))
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from api.seed import ensure_admin
    from core.stores import make_mongo_client

    settings = load_settings()
    _configure_logging(settings)

    async def go() -> None:
        client = make_mongo_client(settings.mongodb_uri)
        try:
            await ensure_admin(client[settings.mongodb_db], args.email, args.name)
        finally:
            await client.close()

    asyncio.run(go())
    print(f"admin {args.email} is ready; sign in with a one-time code sent to that address")  # noqa: T201
    return 0


def _print_banner(settings: Settings) -> None:
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        "",
        f"PartyPilot is running on {base}",
        f"  landing   {base}/",
        f"  customer  {base}/customer   sign in with any email; the one-time code is shown on the page (dev)",
        f"  partner   {base}/partner    sign in as partner1@partypilot.local (approved demo partner)",
        f"  admin     {base}/admin      sign in as {settings.dev_admin_email}",
        f"  API docs  {base}/api/docs   health: {base}/api/health",
        "Press Ctrl-C to stop everything `make run` started.",
        "",
    ]
    sys.stderr.write("\n".join(lines) + "\n")


def cmd_services(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if args.action == "start":
        services = localservices.start(root, args.redis_port, args.mongo_port, persist=not args.ephemeral)
        print(f"REDIS_URL={services.redis_url}")  # noqa: T201
        print(f"MONGODB_URI={services.mongodb_uri}")  # noqa: T201
        return 0
    found = localservices.recorded(root)
    if args.action == "status":
        print("nothing recorded" if found is None else f"running: {found.pids}")  # noqa: T201
        return 0
    if found is not None:
        localservices.stop(found)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.scenario is not None:
        # The dispatch-quality simulator (docs/quality.md): starts its own stores and app processes.
        from loadtests.quality import run as run_quality

        # SIGTERM behaves like Ctrl-C, so the apps and stores it started are stopped either way.
        signal.signal(signal.SIGTERM, _interrupt)
        return run_quality(args.scenario, args.strategies, args.out, args.chaos_redis_flush)
    from dispatch.simulate import run_simulation

    settings = load_settings()
    _configure_logging(settings)
    try:
        return int(asyncio.run(run_simulation(settings, base_url=args.url, partners=args.partners,
                                              accept_probability=args.accept_probability,
                                              reply_delay_s=args.reply_delay, duration_s=args.duration)))
    except KeyboardInterrupt:
        return 0


def latest_codes(outbox: Path, limit: int) -> list[dict[str, str]]:
    """The newest `limit` sign-in codes the local SMS and email gateways wrote under `outbox`, oldest first."""
    from api.auth import SIGN_IN_CODE_PHRASE
    from gateway_clients.delivery import LocalOutboxFile

    pattern = re.compile(rf"^(\d+) {re.escape(SIGN_IN_CODE_PHRASE)}")
    found: list[dict[str, str]] = []
    for channel in ("email", "sms"):
        for message in LocalOutboxFile(outbox, channel).read():
            match = pattern.match(str(message.get("body") or ""))
            if match:
                found.append({"at": str(message.get("at") or ""), "channel": channel,
                              "to": str(message.get("to") or ""), "code": match.group(1)})
    found.sort(key=lambda entry: entry["at"])  # ISO-8601 UTC times sort as text
    return found[-limit:] if limit > 0 else []


def cmd_codes(args: argparse.Namespace) -> int:
    """Print the latest development sign-in codes from the local outbox files (never in production)."""
    from gateway_clients.messaging import local_outbox_dir

    settings = load_settings()
    if settings.is_production:
        sys.stderr.write("partypilot: `codes` is for development; in production sign-in codes go to the "
                         "configured SMS and email providers\n")
        return 2
    outbox = local_outbox_dir(settings)
    found = latest_codes(outbox, args.limit)
    if not found:
        print(f"no sign-in codes in {outbox} yet: request one on a sign-in page first")  # noqa: T201
        return 0
    for entry in found:
        print(f"{entry['at']}  {entry['code']}  {entry['channel']:<5}  {entry['to']}")  # noqa: T201
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partypilot")
    parser.add_argument("--version", action="version", version=f"partypilot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start local services, seed demo data and serve (make run)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--no-simulate", dest="simulate", action="store_false")
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="serve against configured MongoDB and Redis")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("seed", help="seed demo data (idempotent)").set_defaults(func=cmd_seed)

    admin = sub.add_parser("create-admin", help="create or promote an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Administrator")
    admin.set_defaults(func=cmd_create_admin)

    services = sub.add_parser("services", help="start/stop local Redis and nx-27017")
    services.add_argument("action", choices=["start", "stop", "status"])
    services.add_argument("--dir", default=".data")
    services.add_argument("--redis-port", type=int, default=DEV_REDIS_PORT)
    services.add_argument("--mongo-port", type=int, default=DEV_MONGO_PORT)
    services.add_argument("--ephemeral", action="store_true", help="no Redis persistence")
    services.set_defaults(func=cmd_services)

    codes = sub.add_parser("codes", help="print the latest development sign-in codes from the local outbox")
    codes.add_argument("-n", "--limit", type=int, default=10, help="how many (newest last; default 10)")
    codes.set_defaults(func=cmd_codes)

    sim = sub.add_parser("simulate", help="drive simulated partners through the Socket.IO API")
    sim.add_argument("--url", default="http://127.0.0.1:8080")
    sim.add_argument("--partners", type=int, default=50)
    sim.add_argument("--accept-probability", type=float, default=0.8)
    sim.add_argument("--reply-delay", type=float, default=2.0)
    sim.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    sim.add_argument("--scenario", type=Path, help="run the dispatch-quality simulator on this YAML/JSON "
                     "scenario instead (docs/quality.md); the options below apply to it")
    sim.add_argument("--strategies", default="sequential,top_k,broadcast")
    sim.add_argument("--out", type=Path, default=Path(".data/sim"))
    sim.add_argument("--chaos-redis-flush", action="store_true", help="FLUSHALL the run's Redis halfway")
    sim.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, localservices.ServiceError) as exc:
        sys.stderr.write(f"partypilot: {exc}\n")
        return 2
