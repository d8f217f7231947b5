"""PostgreSQL identities source against the real PostgreSQL of scripts/services, both schemas."""

from __future__ import annotations

import threading
from importlib import resources

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from forensics import schema
from forensics.config import Limits
from forensics.errors import SourceError
from forensics.profiles import load_profile
from forensics.sources.base import CollectRequest
from forensics.sources.postgres import Source, conninfo, identities_of_failed, read_identities
from forensics.timeutil import Window

pytestmark = pytest.mark.integration

INJECTION = "'; DROP TABLE users; --"

# The runbook's data model: users.user_id, external_identities.verified (runbook R3.1 query).
RUNBOOK_DDL = """
CREATE TABLE users (
    user_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name VARCHAR(255) NOT NULL,
    user_type VARCHAR(50) NOT NULL DEFAULT 'CUSTOMER'
);
CREATE TABLE external_identities (
    identity_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    platform VARCHAR(50) NOT NULL,
    platform_user_id VARCHAR(255) NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT false,
    credentials JSONB DEFAULT '{}'::jsonb,
    CONSTRAINT unique_platform_user UNIQUE (platform, platform_user_id)
);
"""
# The deployed code's JPA entities: users.id, external_identities.id, verified, linked_at.
JPA_DDL = """
CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    display_name VARCHAR(255) NOT NULL,
    email VARCHAR(255),
    user_type VARCHAR(20) NOT NULL DEFAULT 'CUSTOMER'
);
CREATE TABLE external_identities (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id),
    platform VARCHAR(20) NOT NULL,
    platform_user_id VARCHAR(255) NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT false,
    linked_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT uk_external_identity_platform_user UNIQUE (platform, platform_user_id)
);
"""
# The Flyway migration of the same code base: users.user_id and no verified column.
FLYWAY_DDL = RUNBOOK_DDL.replace("    verified BOOLEAN NOT NULL DEFAULT false,\n", "")

PEOPLE = [
    # display name, platform, platform id, verified, expected format_valid
    ("Ana", "WHATSAPP", "+5511999999999", True, True),
    ("Bruno", "WHATSAPP", "5511988887777", False, False),  # missing '+'
    ("Carla", "TELEGRAM", "@carla_bot", True, True),
    ("Davi", "INSTAGRAM", ".davi", False, False),
    ("Eve", "TELEGRAM", INJECTION, False, False),  # a hostile id stored as data
]


def seed(dsn: str, ddl: str, users_id: str, *, verified: bool = True, users_table: str = "users") -> dict[str, dict]:
    """Create the tables and one user with one identity per PEOPLE row; return what was seeded."""
    seeded = {}
    add_user = sql.SQL("INSERT INTO {} (display_name) VALUES (%s) RETURNING {}::text").format(
        sql.Identifier(users_table), sql.Identifier(users_id))
    columns = ["user_id", "platform", "platform_user_id"] + (["verified"] if verified else [])
    add_identity = sql.SQL("INSERT INTO external_identities ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
        for name, platform, pid, is_verified, valid in PEOPLE:
            user_id = conn.execute(add_user, [name]).fetchone()[0]
            conn.execute(add_identity, [user_id, platform, pid, is_verified][: len(columns)])
            seeded[pid] = {"user_id": user_id, "display_name": name, "platform": platform,
                           "verified": is_verified if verified else None, "format_valid": valid}
    return seeded


def as_records(frame: pd.DataFrame) -> dict[str, dict]:
    out = {}
    for row in frame.to_dict("records"):
        out[row["platform_user_id"]] = {k: (None if pd.isna(row[k]) else row[k])
                                        for k in ("user_id", "display_name", "platform", "verified", "format_valid")}
    return out


@pytest.mark.parametrize(("profile", "ddl", "users_id"), [("runbook", RUNBOOK_DDL, "user_id"),
                                                          ("chat4all-v2", JPA_DDL, "id")])
def test_identities_for_platform_ids_in_both_schemas(pg_schema, profile, ddl, users_id):
    seeded = seed(pg_schema.dsn, ddl, users_id)
    asked = ["+5511999999999", "5511988887777", "@carla_bot", ".davi", INJECTION, "+19999999999"]
    frame = schema.validate("identities", read_identities(pg_schema.dsn, profile=profile, platform_ids=asked))
    assert as_records(frame) == {pid: seeded[pid] for pid in asked if pid in seeded}
    assert set(frame["source"]) == {"postgres"} and set(frame["source_object"]) == {"external_identities"}
    with psycopg.connect(pg_schema.dsn) as conn:
        pk = sql.Identifier("identity_id" if profile == "runbook" else "id")
        refs = dict(conn.execute(sql.SQL("SELECT platform_user_id, {}::text FROM external_identities").format(pk))
                    .fetchall())
    assert dict(zip(frame["platform_user_id"], frame["source_ref"], strict=True)) == refs
    assert "credentials" not in frame.attrs["query"]["sql"]


def test_flyway_schema_without_verified_reads_it_as_unknown(pg_schema):
    seeded = seed(pg_schema.dsn, FLYWAY_DDL, "user_id", verified=False)
    frame = read_identities(pg_schema.dsn, profile="runbook", platform_ids=list(seeded))
    assert as_records(frame) == seeded
    assert frame["verified"].isna().all()


def test_injection_attempts_are_only_values(pg_schema):
    seed(pg_schema.dsn, RUNBOOK_DDL, "user_id")
    frame = read_identities(pg_schema.dsn, profile="runbook",
                            platform_ids=[INJECTION, "x' OR '1'='1", "+5511999999999); DROP TABLE users; --"])
    assert list(frame["platform_user_id"]) == [INJECTION]
    with psycopg.connect(pg_schema.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == len(PEOPLE)


def test_table_names_from_a_profile_are_quoted_identifiers(pg_schema, tmp_path):
    ddl = RUNBOOK_DDL.replace("TABLE users", 'TABLE "App Users"').replace("REFERENCES users", 'REFERENCES "App Users"')
    seeded = seed(pg_schema.dsn, ddl, "user_id", users_table="App Users")
    yaml_text = resources.files("forensics.profiles").joinpath("runbook.yaml").read_text()
    path = tmp_path / "site.yaml"
    path.write_text(yaml_text.replace("users_table: users", 'users_table: "App Users"'))
    frame = read_identities(pg_schema.dsn, profile=str(path), platform_ids=["+5511999999999"])
    assert as_records(frame) == {"+5511999999999": seeded["+5511999999999"]}


def test_all_identities_within_a_cap(pg_schema):
    seed(pg_schema.dsn, RUNBOOK_DDL, "user_id")
    everything = read_identities(pg_schema.dsn, profile="runbook")
    assert len(everything) == len(PEOPLE) and not everything.attrs["truncated"]
    capped = read_identities(pg_schema.dsn, profile="runbook", limit=2)
    assert len(capped) == 2 and capped.attrs["truncated"]
    assert list(capped["platform_user_id"]) == list(everything["platform_user_id"][:2])


def test_identities_of_failed_recipients_match_their_channel(pg_schema):
    seed(pg_schema.dsn, JPA_DDL, "id")
    messages = schema.conform("messages", pd.DataFrame({
        "message_id": ["m1", "m2", "m3", "m4", "m5"],
        "status": ["FAILED", "FAILED", "DELIVERED", "FAILED", "FAILED"],
        "channel": ["WHATSAPP", "WHATSAPP", "TELEGRAM", "INSTAGRAM", None],
        "recipient_id": ["5511988887777", "+5500000000000", "@carla_bot", "@carla_bot", ".davi"],
        "source": "mongodb",
    }))
    frame = identities_of_failed(messages, pg_schema.dsn, profile="chat4all-v2")
    # m2 has no identity; m3 did not fail; m4's id is a TELEGRAM identity, not an INSTAGRAM one;
    # m5 has no channel, so any platform's identity counts
    assert sorted(frame["platform_user_id"]) == [".davi", "5511988887777"]
    assert not frame["format_valid"].any()


def test_the_session_is_read_only_and_bounded(pg_schema):
    seed(pg_schema.dsn, RUNBOOK_DDL, "user_id")
    with psycopg.connect(conninfo(pg_schema.dsn, Limits(timeout_s=12, connect_timeout_s=3))) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "12s"
        assert conn.execute("SHOW search_path").fetchone()[0] == pg_schema.name  # the DSN's own options kept
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM users")


def test_statement_timeout_becomes_a_source_error(pg_schema):
    seed(pg_schema.dsn, RUNBOOK_DDL, "user_id")
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with psycopg.connect(pg_schema.dsn) as conn:
            conn.execute("LOCK TABLE external_identities IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(SourceError, match="cancelled after 0.5 s"):
            read_identities(pg_schema.dsn, profile="runbook", platform_ids=["+5511999999999"],
                            limits=Limits(timeout_s=0.5))
    finally:
        release.set()
        holder.join()


def test_errors_name_the_problem_and_never_the_password(pg_schema):
    password = conninfo_to_dict(pg_schema.dsn)["password"]
    with pytest.raises(SourceError, match="authentication failed") as err:
        read_identities(make_conninfo(pg_schema.dsn, password=password + "x"), platform_ids=["+5511999999999"])
    assert password not in str(err.value) and "***" in str(err.value)
    with pytest.raises(SourceError, match="unreachable") as err:
        read_identities(make_conninfo(pg_schema.dsn, port="1"), platform_ids=["x"], limits=Limits(connect_timeout_s=2))
    assert password not in str(err.value) and "scripts/services status" in str(err.value)
    with pytest.raises(SourceError, match="table external_identities .* not found"):
        read_identities(pg_schema.dsn, profile="runbook", platform_ids=["x"])  # empty schema


def test_the_wrong_profile_for_the_schema_says_which_one_fits(pg_schema):
    seed(pg_schema.dsn, JPA_DDL, "id")
    with pytest.raises(SourceError, match="users has no column user_id") as err:
        read_identities(pg_schema.dsn, profile="runbook", platform_ids=["+5511999999999"])
    assert "chat4all-v2" in str(err.value)


def test_collect_reads_platform_ids_from_options(pg_schema):
    seed(pg_schema.dsn, RUNBOOK_DDL, "user_id")
    window = Window.parse("2025-12-03T14:00:00Z", "2025-12-03T15:00:00Z")
    options = {"postgres_dsn": pg_schema.dsn, "platform_ids": "+5511999999999,@carla_bot"}
    result = Source.collect(CollectRequest(window, load_profile("runbook"), options))
    frame = schema.validate("identities", result.tables["identities"])
    assert sorted(frame["platform_user_id"]) == ["+5511999999999", "@carla_bot"]
    password = conninfo_to_dict(pg_schema.dsn)["password"]
    assert password not in str(result.description) and password not in str(result.queries)
    assert result.description["truncated"] is False


@pytest.mark.parametrize("profile", ["runbook", "chat4all-v2"])
def test_a_seeded_incident_reads_back_as_simulated(pg_dsn, pg_schema, profile):
    from forensics.simulate.seed import Placement, seed

    result = seed("recipient-not-on-whatsapp", profile=profile, messages=300, seed=4, targets=["postgres"],
                  placement=Placement(pg_schema=pg_schema.name), connections={"postgres": pg_dsn})
    want = result.evidence.table("identities").sort_values(["platform", "platform_user_id"], ignore_index=True)
    got = read_identities(pg_dsn, profile=result.profile)  # schema-qualified table names
    got = schema.validate("identities", got).sort_values(["platform", "platform_user_id"], ignore_index=True)
    assert len(got) == len(want) > 0 and not got.attrs["truncated"]
    assert (~got["format_valid"]).any()  # the scenario's malformed numbers are seen as such
    for column in ("user_id", "platform", "platform_user_id", "verified", "display_name", "format_valid",
                   "source", "source_ref"):
        pd.testing.assert_series_equal(got[column], want[column], check_names=False, obj=column)
    assert set(got["source_object"]) == {f"{pg_schema.name}.external_identities"}
