"""The `onemap` command line (contracts in DESIGN.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from onemap.embedded import MEMORY_STORAGE
from onemap.errors import ConfigError, OneMapError
from onemap.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        kafka_url=getattr(args, "kafka", None), redis_url=getattr(args, "redis", None),
        dashboard_port=getattr(args, "dashboard_port", None),
        metrics_port=getattr(args, "metrics_port", None),
        data_dir=getattr(args, "data_dir", None),
    )


def cmd_up(args: argparse.Namespace) -> int:
    from onemap.up import Supervisor, UpOptions

    scenario = None if args.scenario in ("", "none") else args.scenario
    opts = UpOptions(kafka_url=args.kafka, redis_url=args.redis, kafka_port=args.kafka_port,
                     redis_port=args.redis_port, scenario=scenario, speed=args.speed,
                     broker_storage=args.broker_storage)
    base = Settings.from_env(dashboard_port=args.dashboard_port, metrics_port=args.metrics_port,
                             data_dir=args.data_dir)
    return Supervisor().run(base, opts)


def cmd_worker(args: argparse.Namespace) -> int:
    from onemap.streams.worker import run_worker

    return run_worker(_settings(args))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from onemap.sinks.dashboard.server import run_dashboard

    return run_dashboard(_settings(args))


def cmd_ingest(args: argparse.Namespace) -> int:
    from onemap.streams.http_ingest import run_ingest

    s = Settings.from_env(kafka_url=args.kafka, ingest_host=args.host, ingest_port=args.port)
    return run_ingest(s, s.ingest_host, s.ingest_port, s.ingest_token)


def cmd_replay(args: argparse.Namespace) -> int:
    from onemap.streams.replay import replay

    sent = replay(_settings(args), [Path(f) for f in args.files], speed=args.speed,
                  feed=args.feed, rebase_now=args.rebase_now)
    print(f"replayed {sent} records", file=sys.stderr)
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    from onemap.geo.cli import locate_command

    return int(locate_command(lon=args.lon, lat=args.lat, csv_path=args.csv, crs=args.crs,
                              boundaries=args.boundaries))


def cmd_check(args: argparse.Namespace) -> int:
    if args.what == "rules":
        from onemap.rules.rulebook import load_rulebook

        book = load_rulebook(Path(args.path))
        print(f"rules OK: {args.path} (version {book.version})")
        return 0
    from onemap.geo.validate import check_boundaries, format_findings

    findings, code = check_boundaries(Path(args.path))
    print(format_findings(findings))
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onemap", description=(
        "OneMap: real-time emergency risk prioritisation for the city's one map. "
        "Settings also come from ONEMAP_* environment variables (see README)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run everything on this machine (embedded broker + Redis)")
    up.add_argument("--kafka", metavar="URL", help="use this Kafka instead of the embedded one")
    up.add_argument("--redis", metavar="URL", help="use this Redis instead of the embedded one")
    up.add_argument("--kafka-port", type=int, default=19092, help="embedded broker port")
    up.add_argument("--redis-port", type=int, default=16379, help="embedded Redis port")
    up.add_argument("--broker-storage", metavar="URL",
                    default=os.environ.get("ONEMAP_BROKER_STORAGE", MEMORY_STORAGE),
                    help="embedded broker storage: memory://tansu/ (default, lost on stop) or "
                         "s3://BUCKET/ with the S3 service's AWS_* variables (kept); "
                         "env ONEMAP_BROKER_STORAGE")
    up.add_argument("--dashboard-port", type=int, help="dashboard port (default 8000)")
    up.add_argument("--metrics-port", type=int, help="worker metrics port (default 9108)")
    up.add_argument("--scenario", default="demo",
                    help="scenario to replay (shipped name or file; 'none' for none)")
    up.add_argument("--speed", type=float, default=120.0,
                    help="scenario speed factor (120: two hours of storm a minute)")
    up.add_argument("--data-dir", type=Path, help="where logs, outbox and state go (var/)")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="run one stream worker (all stages and sinks)")
    worker.add_argument("--kafka", metavar="URL")
    worker.add_argument("--redis", metavar="URL")
    worker.add_argument("--metrics-port", type=int)
    worker.add_argument("--data-dir", type=Path)
    worker.set_defaults(func=cmd_worker)

    dash = sub.add_parser("dashboard", help="serve the wall display")
    dash.add_argument("--redis", metavar="URL")
    dash.add_argument("--dashboard-port", type=int)
    dash.set_defaults(func=cmd_dashboard)

    ing = sub.add_parser("ingest", help="serve the HTTP ingest endpoint (POST /ingest/{feed})")
    ing.add_argument("--kafka", metavar="URL")
    ing.add_argument("--host", help="bind address (default 127.0.0.1)")
    ing.add_argument("--port", type=int, help="port (default 8100)")
    ing.set_defaults(func=cmd_ingest)

    rp = sub.add_parser("replay", help="produce recorded feed files into Kafka")
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument("--speed", type=float, default=0.0,
                    help="replay X times faster than event time (0: as fast as possible)")
    rp.add_argument("--feed", help="feed of bare records (else from envelope or file name)")
    rp.add_argument("--rebase-now", action="store_true",
                    help="shift event times so the first record happens now")
    rp.add_argument("--kafka", metavar="URL")
    rp.set_defaults(func=cmd_replay)

    loc = sub.add_parser("locate", help="four-level codes and names of a point or a CSV")
    loc.add_argument("lon", type=float, nargs="?")
    loc.add_argument("lat", type=float, nargs="?")
    loc.add_argument("--csv", type=Path, help="CSV with lon,lat columns (streamed)")
    loc.add_argument("--crs", default="wgs84", choices=["wgs84", "gcj02", "bd09"])
    loc.add_argument("--boundaries", type=Path, help="boundary files (default: Zhuhai)")
    loc.set_defaults(func=cmd_locate)

    chk = sub.add_parser("check", help="validate boundary or rule files")
    chk.add_argument("what", choices=["boundaries", "rules"])
    chk.add_argument("path")
    chk.set_defaults(func=cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "locate" and args.csv is None and (args.lon is None or args.lat is None):
        parser.error("locate needs LON LAT or --csv FILE")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"onemap: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except OneMapError as exc:
        print(f"onemap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
