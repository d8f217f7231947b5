"""The live report's whole-window figures computed from collected rows: the definitions the
server's pipelines share (tests/integration/test_pushdown.py holds the two equal)."""

import pandas as pd

from forensics import schema
from forensics.report.pushdown import bucket_for, figures_from_rows
from forensics.timeutil import Window

WINDOW = Window(pd.Timestamp("2025-12-03T10:00:00Z"), pd.Timestamp("2025-12-03T11:00:00Z"))
RATE = "status=429, body=rate limited"


def t(clock: str) -> pd.Timestamp:
    return pd.Timestamp(f"2025-12-03T{clock}Z")


def messages() -> pd.DataFrame:
    rows = [  # id, status, channel, created, updated, error
        ("p1", "PENDING", "WHATSAPP", t("10:00:00"), None, None),  # stuck: 30 s passed long ago
        ("p2", "PENDING", "TELEGRAM", t("10:59:50"), None, None),  # 10 s before the end: not yet
        ("s1", "SENT", "WHATSAPP", t("10:10:00"), t("10:10:01"), None),  # stuck: 120 s passed
        ("s2", "SENT", "WHATSAPP", t("10:20:00"), t("10:59:00"), None),  # updated a minute before the end
        ("f1", "FAILED", "WHATSAPP", t("10:05:00"), t("10:05:01"), RATE),
        ("f2", "FAILED", "telegram", t("10:45:00"), t("10:45:01"), RATE),
        ("f3", "FAILED", "INSTAGRAM", t("10:30:00"), t("10:30:01"), None),
        ("old", "PENDING", "WHATSAPP", t("09:00:00"), None, None),  # created before the window
    ]
    frame = pd.DataFrame(rows, columns=["message_id", "status", "channel", "created_at", "updated_at",
                                        "error_message"])
    return frame.astype({"message_id": schema.STR, "status": schema.STR, "channel": schema.STR,
                         "created_at": schema.UTC_TS, "updated_at": schema.UTC_TS, "error_message": schema.STR})


def test_buckets_cut_a_window_into_at_most_120():
    assert bucket_for(WINDOW) == "1min"
    assert bucket_for(Window(WINDOW.start, WINDOW.start + pd.Timedelta("24h"))) == "15min"
    assert bucket_for(Window(WINDOW.start, WINDOW.start + pd.Timedelta("30D"))) == "6h"


def test_stuck_failed_and_status_counts_of_the_messages_created_in_the_window():
    figures = figures_from_rows(messages(), WINDOW)
    assert figures.computed_on == "rows" and figures.messages == 7
    assert figures.stuck[["status", "channel", "count"]].values.tolist() == [["PENDING", "WHATSAPP", 1],
                                                                            ["SENT", "WHATSAPP", 1]]
    assert figures.examples["message_id"].tolist() == ["p1", "s1"]  # stuck longest first
    failed = figures.failed_by_error
    assert failed[["error_message", "count", "channels"]].astype(object).where(failed.notna(), None).values.tolist() \
        == [[RATE, 2, "TELEGRAM,WHATSAPP"], [None, 1, "INSTAGRAM"]]
    assert (failed.loc[0, "first_seen"], failed.loc[0, "last_seen"]) == (t("10:05:00"), t("10:45:00"))
    first = figures.status_counts.query("bucket_start == @WINDOW.start")
    assert first[["status", "count"]].values.tolist() == [["PENDING", 1]]
    assert figures.status_counts["count"].sum() == 7


def test_thresholds_and_channel_narrow_the_figures():
    figures = figures_from_rows(messages(), WINDOW, {"stuck_pending_s": 5.0, "stuck_sent_s": 30.0},
                                channel="WHATSAPP")
    assert figures.messages == 4  # p1, s1, s2, f1
    assert figures.stuck.set_index("status")["count"].to_dict() == {"PENDING": 1, "SENT": 2}
    assert figures.failed_by_error["count"].tolist() == [1]
