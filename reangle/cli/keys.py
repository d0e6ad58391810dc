"""`reangle keys`: create, list and revoke the stored API keys, and print a key's webhook signing secret."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reangle.cli.serve import make_data_dir, with_flags
from reangle.errors import InvalidInput
from reangle.settings import Settings

if TYPE_CHECKING:
    from reangle.core.ports import ApiKeyRecord, JobStore

DATA_DIR_HELP = "default: REANGLE_DATA_DIR or ~/.local/share/reangle"


def add_keys_commands(commands: argparse._SubParsersAction[Any]) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(metavar="ACTION", required=True)
    create = key_commands.add_parser("create", help="make a new API key (printed once; stored hashed)")
    create.add_argument("--name", default="default", type=key_name, help="a label for the key")
    create.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    create.set_defaults(run=run_keys_create)

    listing = key_commands.add_parser(
        "list", help="list the stored API keys: id, name and when made (never the key itself)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    listing.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    listing.set_defaults(run=run_keys_list)

    revoke = key_commands.add_parser(
        "revoke", help="delete a stored API key; a running server refuses it within 10 seconds"
    )
    revoke.add_argument("key", metavar="NAME_OR_ID", help="the key's id (key_...) or its name, if unique")
    revoke.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    revoke.set_defaults(run=run_keys_revoke)

    secret = key_commands.add_parser(
        "webhook-secret", help="print the secret a key's webhooks are signed with (made on first use)"
    )
    secret.add_argument(
        "--key-id", required=True, help="key_... (reangle keys create) or env_... (REANGLE_API_KEYS)"
    )
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="make a new secret; the old one keeps signing beside it for 24 h",
    )
    secret.add_argument(
        "--force",
        action="store_true",
        help="with --rotate: rotate even while the secret rotated out last still signs (it stops at once)",
    )
    secret.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    secret.set_defaults(run=run_keys_webhook_secret)


def _breaks_columns(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def key_name(text: str) -> str:
    """--name: a label `reangle keys list` can show in its columns (argparse's one-line error otherwise)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a key's name cannot be empty or blank")
    if any(_breaks_columns(char) for char in text):
        raise argparse.ArgumentTypeError(
            f"a key's name cannot hold control characters (tabs, line breaks): {text!r}"
        )
    return text


def open_store(
    args: argparse.Namespace, settings: Settings, *, existing: bool = False, writes: bool = False
) -> tuple[Settings, JobStore]:
    """The settings with --data-dir applied, and the job store they name (an unusable data folder is one
    line, not a traceback). `existing`: a command that only reads or removes keys makes no database, so that
    a mistyped data folder says so instead of listing no keys. `writes`: the command changes the database,
    so a data folder it cannot write in (a read-only file system) is refused before it opens."""
    from reangle.compose import SQLITE_FILE, open_job_store
    from reangle.store.data_lock import check_writable

    settings = with_flags(settings, args, "data_dir")
    if existing and not settings.database_url and not (settings.data_dir / SQLITE_FILE).is_file():
        raise InvalidInput(
            f"no reangle database in {settings.data_dir}",
            field="data-dir",
            hint="check --data-dir or REANGLE_DATA_DIR; `reangle keys create` makes the first key",
        )
    if existing and settings.database_url:
        check_schema_current(settings)
    make_data_dir(settings, jobs_only=True)
    if writes and not settings.database_url:
        check_writable(settings.data_dir, settings.data_dir / SQLITE_FILE)
    return settings, open_job_store(settings)


def check_schema_current(settings: Settings) -> None:
    """InvalidInput unless the PostgreSQL database holds this version's schema, exactly: a command that
    only reads or removes neither makes reangle's tables in a mistyped database nor migrates a live one
    under its workers (that is `reangle db upgrade`'s job, in its order)."""
    import psycopg

    from reangle.compose import check_database_url
    from reangle.store.newer_schema import newer_schema
    from reangle.store.pg_schema import MIGRATIONS, schema_version
    from reangle.store.postgres import connection_failure, database_address

    check_database_url(settings)
    url = str(settings.database_url)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            found = schema_version(conn)
    except psycopg.OperationalError as exc:
        raise connection_failure(database_address(url), exc) from None
    known = MIGRATIONS[-1].version
    where = jobs_location(settings)
    if found == 0:
        raise InvalidInput(
            f"no reangle database in {where}: it holds no reangle tables",
            field="database_url",
            hint="check REANGLE_DATABASE_URL; `reangle db upgrade` or a server's start makes them",
        )
    if found < known:
        raise InvalidInput(
            f"the database {where} has schema version {found}; this reangle's is {known}",
            field="database_url",
            hint="upgrade it with `reangle db upgrade` (docs/scale-out.md says in which order)",
        )
    if found > known:
        raise newer_schema(f"the database {where}", found, known)


def jobs_location(settings: Settings) -> str:
    """Where the job store is: the data folder, or the database (without its password)."""
    from reangle.compose import storage_summary

    return str(settings.data_dir) if not settings.database_url else storage_summary(settings)["jobs"]


def run_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from reangle.api.auth import create_key

    settings, store = open_store(args, settings, writes=True)
    try:
        key_id, key = create_key(store, args.name)
    finally:
        store.close()
    print(
        f"reangle: created {key_id} ({args.name}) in {jobs_location(settings)}; this is the only time the "
        "key is shown:",
        file=sys.stderr,
    )
    print(key)
    return 0


def _in_columns(name: str) -> str:
    """A name as one cell: control characters (in names stored before `keys create` refused them) escaped."""
    return "".join(repr(char)[1:-1] if _breaks_columns(char) else char for char in name)


def _created(record: ApiKeyRecord) -> str:
    return datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from reangle.api.auth import env_key_id, listed_keys

    settings, store = open_store(args, settings, existing=True)
    try:
        records = store.list_api_keys()
    finally:
        store.close()
    # the keys of REANGLE_API_KEYS (as this shell sets it) too: their ids are what `webhook-secret` and
    # `admin jobs --key-id` take
    env_ids = list(dict.fromkeys(env_key_id(key) for key in listed_keys(settings.api_keys)))
    if args.json:
        for record in records:
            print(json.dumps({"id": record.id, "name": record.name, "created": _created(record)}))
        for number, key_id in enumerate(env_ids, start=1):
            print(json.dumps({"id": key_id, "name": f"REANGLE_API_KEYS #{number}", "created": None}))
        return 0
    if not records and not env_ids:
        print(f"reangle: no stored API keys in {jobs_location(settings)}", file=sys.stderr)
        return 0
    rows = [(record.id, _in_columns(record.name), _created(record)) for record in records]
    rows += [(key_id, f"REANGLE_API_KEYS #{number}", "-") for number, key_id in enumerate(env_ids, start=1)]
    width = max(len(name) for _, name, _ in rows)
    for key_id, name, created in rows:
        print(f"{key_id}  {name:<{width}}  {created}")
    return 0


def run_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    wanted: str = args.key
    if wanted.startswith("env_"):
        raise InvalidInput(
            f"{wanted} is a key of REANGLE_API_KEYS: remove it from that setting and restart the servers",
            field="key",
        )
    settings, store = open_store(args, settings, existing=True, writes=True)
    try:
        records = store.list_api_keys()
        matches = [record for record in records if record.id == wanted] or [
            record for record in records if record.name == wanted
        ]
        if not matches:
            raise InvalidInput(f"no API key {wanted!r} in {jobs_location(settings)}", field="key")
        if len(matches) > 1:
            ids = ", ".join(record.id for record in matches)
            raise InvalidInput(f"{len(matches)} keys are named {wanted!r} ({ids}): give the id", field="key")
        record = matches[0]
        if not store.delete_api_key(record.id):  # revoked meanwhile by someone else
            raise InvalidInput(f"no API key {wanted!r} in {jobs_location(settings)}", field="key")
    finally:
        store.close()
    print(
        f"reangle: revoked {record.id} ({record.name}); running servers refuse it within 10 seconds",
        file=sys.stderr,
    )
    return 0


def run_keys_webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from reangle.api.auth import ANONYMOUS, KeyRing
    from reangle.core.webhooks import ROTATION_OVERLAP_S

    if args.force and not args.rotate:
        raise InvalidInput("--force goes with --rotate: give both, or neither", field="force")
    settings, store = open_store(args, settings, existing=True, writes=True)
    try:
        env_ids = KeyRing(store, enabled=True, env_keys=settings.api_keys).env_key_ids()
        if args.key_id not in env_ids and args.key_id != ANONYMOUS and not store.has_api_key(args.key_id):
            raise InvalidInput(
                f"no API key {args.key_id!r} in {jobs_location(settings)} or REANGLE_API_KEYS",
                field="key-id",
                hint="key ids look like key_0123456789abcdef; `reangle keys create` prints them",
            )
        now = time.time()
        if args.rotate and not args.force and len(store.webhook_secrets(args.key_id, now)) > 1:
            raise InvalidInput(
                f"the previous webhook secret of {args.key_id} still signs beside the current one (for 24 h "
                "after a rotation): rotating again now would stop it at once, and receivers still holding it "
                "would refuse the deliveries",
                field="rotate",
                hint="to stop it at once anyway, for a leaked secret, give --force as well",
            )
        if args.rotate:
            secret = store.rotate_webhook_secret(args.key_id, now, ROTATION_OVERLAP_S)
            print(
                f"reangle: new webhook secret for {args.key_id}; the old one signs too for 24 h",
                file=sys.stderr,
            )
        else:
            secret = store.webhook_secrets(args.key_id, now)[0]
    finally:
        store.close()
    print(secret)
    return 0
