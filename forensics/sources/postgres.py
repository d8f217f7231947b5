"""Recipient identities from PostgreSQL (the user-service database) into ``identities``.

``external_identities`` joined to ``users`` (runbook R3.1, "Recipient not found"), with
``format_valid`` from :mod:`forensics.sources.identity`. Names come from the profile: the runbook's
data model keys users by ``users.user_id``, the deployed code (JPA) by ``users.id``. Columns
that only one schema has (``verified`` exists in the JPA entity, not in the Flyway
migration; ``display_name``) are looked up first and read as null when absent.
``credentials`` is never selected.

Read only and bounded: the session runs with ``default_transaction_read_only=on`` and each
transaction is opened ``READ ONLY``; ``statement_timeout`` and ``connect_timeout`` come from
:class:`~forensics.config.Limits`. Table and column names go through
``psycopg.sql.Identifier``; every value is a bound parameter.

Provenance: ``source="postgres"``, ``source_object`` = the identities table, ``source_ref`` =
the identity's primary key (else ``platform:platform_user_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from forensics import schema
from forensics.config import DEFAULT_LIMITS, Limits, connection
from forensics.credentials import mask_uri
from forensics.errors import SourceError
from forensics.profiles import Profile, load_profile
from forensics.sources.base import EvidenceSource, Option, SourceResult, connected
from forensics.sources.identity import format_valid
from forensics.timeutil import Window

SOURCE = "postgres"
DEFAULT_IDENTITY_LIMIT = 100_000
"""Cap on identities read when no platform ids are given (``attrs["truncated"]`` says when hit)."""
APPLICATION_NAME = "chat4all-forensics"
_HINT_DSN = "set FORENSICS_POSTGRES_DSN (or -o postgres_dsn=...) to the user-service database"


def read_identities(dsn: str | None = None, *, profile: Profile | str | None = None,
                    platform_ids: Iterable[str] | None = None, limit: int = DEFAULT_IDENTITY_LIMIT,
                    limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Identities whose ``platform_user_id`` is one of ``platform_ids``; every identity (up to
    ``limit``, ordered by platform and id) when ``platform_ids`` is None.

    Returns the ``identities`` table. ``frame.attrs`` holds ``query`` (the SQL text and its
    parameters, for the custody record) and ``truncated`` (True when ``limit`` cut the result).
    """
    prof = load_profile(profile)
    ids = None if platform_ids is None else sorted({str(v) for v in platform_ids if not pd.isna(v)})
    if ids == []:
        frame = schema.empty("identities")
        frame.attrs.update(query=None, truncated=False)
        return frame
    with _connect(dsn, limits) as conn:
        query, source_ref = _identity_query(conn, prof, by_id=ids is not None)
        params: list[Any] = ([ids] if ids is not None else []) + [limit + 1]
        rows = _fetch(conn, query, params)
        text = query.as_string(conn)
    truncated = len(rows) > limit
    frame = _frame(rows[:limit], prof, source_ref)
    frame.attrs.update(query={"sql": text, "platform_ids": len(ids) if ids is not None else None, "limit": limit},
                       truncated=truncated)
    return frame


def identities_of_failed(messages: pd.DataFrame, dsn: str | None = None, *, profile: Profile | str | None = None,
                         limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Identities of the recipients of FAILED messages (``messages`` table: status, channel, recipient_id).

    An identity counts when its platform is the message's channel (any platform when the
    channel is unknown). Recipients that have no identity at all are simply absent: compare
    with ``messages.recipient_id`` to find them.
    """
    failed = messages.loc[(messages["status"] == "FAILED").fillna(False), ["channel", "recipient_id"]]
    failed = failed.dropna(subset=["recipient_id"]).drop_duplicates()
    found = read_identities(dsn, profile=profile, platform_ids=failed["recipient_id"], limit=limits.max_rows,
                            limits=limits)
    if found.empty:
        return found
    wanted = set(zip(failed["channel"].astype("string").str.upper().fillna(""), failed["recipient_id"],
                     strict=True))
    any_channel = set(failed.loc[failed["channel"].isna(), "recipient_id"])
    keep = [(p, i) in wanted or i in any_channel
            for p, i in zip(found["platform"].str.upper(), found["platform_user_id"], strict=True)]
    out = found[keep].reset_index(drop=True)
    out.attrs.update(found.attrs)
    return out


# ---- connection --------------------------------------------------------------

def conninfo(dsn: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """``dsn`` (URL or key=value) with read-only session defaults, statement and connect timeouts
    added; options already in ``dsn`` (a search_path, ...) are kept."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise SourceError(SOURCE, f"invalid connection string {mask_uri(dsn)}: {exc}", _HINT_DSN) from None
    options = " ".join(filter(None, [params.get("options"), "-c default_transaction_read_only=on",
                                     f"-c statement_timeout={int(limits.timeout_s * 1000)}"]))
    return make_conninfo(dsn, options=options, connect_timeout=max(1, round(limits.connect_timeout_s)),
                         application_name=APPLICATION_NAME)


@contextmanager
def _connect(dsn: str | None, limits: Limits) -> Iterator[psycopg.Connection]:
    def failure(exc: BaseException, masked: str, opening: bool) -> SourceError | None:
        if opening:
            return _connect_error(exc, masked) if isinstance(exc, psycopg.OperationalError) else None
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return SourceError(SOURCE, f"query cancelled after {limits.timeout_s:g} s on {masked}: {_first_line(exc)}",
                               "a smaller set of platform ids, or a larger Limits.timeout_s")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return SourceError(SOURCE, f"permission denied on {masked}: {_first_line(exc)}",
                               "grant SELECT on the identities and users tables to this user")
        if isinstance(exc, psycopg.Error):
            return SourceError(SOURCE, f"query failed on {masked}: {_first_line(exc)}", "")
        return None

    with connected(SOURCE, connection(SOURCE, dsn), missing_hint=_HINT_DSN,
                   open=lambda address: psycopg.connect(conninfo(address, limits)), failure=failure) as conn:
        conn.read_only = True  # BEGIN READ ONLY on top of the session default
        with conn.transaction():
            yield conn


def _connect_error(exc: psycopg.OperationalError, masked: str | None) -> SourceError:
    text = _first_line(exc)
    low = text.lower()
    if "password authentication failed" in low or "authentication" in low or "no password supplied" in low:
        return SourceError(SOURCE, f"authentication failed for {masked}: {text}",
                           "user and password in FORENSICS_POSTGRES_DSN")
    if "does not exist" in low:
        return SourceError(SOURCE, f"cannot connect with {masked}: {text}", "the database name in the DSN")
    if "timeout" in low or "timed out" in low:
        return SourceError(SOURCE, f"timed out connecting with {masked}: {text}",
                           "host and port, firewalls; Limits.connect_timeout_s")
    return SourceError(SOURCE, f"unreachable: {masked}: {text}",
                       "is PostgreSQL running at that host and port? (scripts/services status)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return mask_uri(lines[0] if lines else type(exc).__name__) or ""


# ---- query -------------------------------------------------------------------

def _identifier(name: str) -> sql.Identifier:
    """``table`` or ``schema.table`` as a quoted identifier."""
    return sql.Identifier(*name.split("."))


def _columns(conn: psycopg.Connection, table: str, what: str) -> tuple[set[str], list[str]]:
    """Columns and primary-key columns of ``table`` as the search_path resolves it."""
    regclass = _identifier(table).as_string(conn)
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [regclass]).fetchone()
    if not found or not found[0]:
        raise SourceError(SOURCE, f"table {table} ({what}) not found",
                          "the profile's postgres table names, and whether the DSN names the user-service "
                          "database and schema (search_path)")
    columns = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        [regclass]).fetchall()}
    primary = [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY a.attnum", [regclass]).fetchall()]
    return columns, primary


def _identity_query(conn: psycopg.Connection, prof: Profile, *, by_id: bool) -> tuple[sql.Composed, bool]:
    """The SELECT for this database's columns; also whether it selects a primary key as source_ref."""
    names = prof.postgres
    id_columns, id_primary = _columns(conn, names.identities_table, "external identities")
    user_columns, _ = _columns(conn, names.users_table, "users")
    for needed in ("platform", "platform_user_id", "user_id"):
        if needed not in id_columns:
            raise SourceError(SOURCE, f"{names.identities_table} has no column {needed} "
                                      f"(columns: {', '.join(sorted(id_columns))})", "the profile's identities_table")
    if names.users_id_column not in user_columns:
        other = next((c for c in ("user_id", "id") if c in user_columns), None)
        hint = (f"this database keys users by {other}: use a profile with users_id_column: {other} "
                f"({'runbook' if other == 'user_id' else 'chat4all-v2'})") if other else "the profile's users table"
        raise SourceError(SOURCE, f"{names.users_table} has no column {names.users_id_column} "
                                  f"(profile {prof.name})", hint)
    ei, u = sql.Identifier("ei"), sql.Identifier("u")
    verified = (sql.SQL("{}.{}").format(ei, sql.Identifier("verified")) if "verified" in id_columns
                else sql.SQL("NULL::boolean"))
    display = (sql.SQL("{}.{}::text").format(u, sql.Identifier("display_name")) if "display_name" in user_columns
               else sql.SQL("NULL::text"))
    has_pk = len(id_primary) == 1
    ref = sql.SQL("{}.{}::text").format(ei, sql.Identifier(id_primary[0])) if has_pk else sql.SQL("NULL::text")
    query = sql.SQL(
        "SELECT {ei}.user_id::text AS user_id, {ei}.platform::text AS platform, "
        "{ei}.platform_user_id::text AS platform_user_id, {verified} AS verified, {display} AS display_name, "
        "{ref} AS source_ref "
        "FROM {identities} AS {ei} LEFT JOIN {users} AS {u} ON {u}.{users_id}::text = {ei}.user_id::text "
        "{where}ORDER BY {ei}.platform, {ei}.platform_user_id LIMIT %s"
    ).format(
        ei=ei, u=u, verified=verified, display=display, ref=ref,
        identities=_identifier(names.identities_table), users=_identifier(names.users_table),
        users_id=sql.Identifier(names.users_id_column),
        where=sql.SQL("WHERE {}.platform_user_id = ANY(%s::text[]) ").format(ei) if by_id else sql.SQL(""),
    )
    return query, has_pk


def _fetch(conn: psycopg.Connection, query: sql.Composed, params: list[Any]) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _frame(rows: list[tuple], prof: Profile, has_pk: bool) -> pd.DataFrame:
    columns = ["user_id", "platform", "platform_user_id", "verified", "display_name", "source_ref"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    if frame.empty:
        return schema.empty("identities")
    frame["platform"] = frame["platform"].astype("string").str.upper()
    if not has_pk:
        frame["source_ref"] = frame["platform"] + ":" + frame["platform_user_id"].astype("string")
    frame["verified"] = frame["verified"].astype(schema.BOOL)
    frame["format_valid"] = format_valid(frame["platform"], frame["platform_user_id"])
    frame["source"] = SOURCE
    frame["source_object"] = prof.postgres.identities_table
    return schema.conform("identities", frame)


# ---- collection --------------------------------------------------------------

class Source(EvidenceSource):
    """Identities for ``platform_ids`` (list or comma-separated), else all identities up to
    ``identity_limit``; connection from ``postgres_dsn`` or FORENSICS_POSTGRES_DSN."""

    name = "postgres"
    tables = ("identities",)
    connection, env = "postgres_dsn", "postgres"
    options = (
        Option("platform_ids", "list", None, "recipients' platform ids to look up (default: all)"),
        Option("identity_limit", "int", DEFAULT_IDENTITY_LIMIT, "identities read at most", minimum=1),
    )

    def read(self, window: Window) -> SourceResult:
        dsn, ids, limit = self.opts.connection, self.opts["platform_ids"], self.opts["identity_limit"]
        self.say(f"postgres: identities from {mask_uri(dsn) if dsn else '(no DSN)'}")
        frame = read_identities(dsn, profile=self.profile, platform_ids=ids, limit=limit, limits=self.opts.limits)
        tables = {"identities": frame}
        notes = [f"truncated at {limit} identities"] if frame.attrs.get("truncated") else []
        description = self.describe(tables, notes=notes, parameters={
            "platform_ids": len(ids) if ids is not None else None, "identity_limit": limit})
        return SourceResult(tables=tables, description=description,
                            queries={"identities": {"postgres": frame.attrs.get("query")}})
