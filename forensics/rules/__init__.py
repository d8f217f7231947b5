"""Alert rules in Prometheus rule-file format, and the metric names each profile exports.

Two kinds of data ship here, both YAML:

- ``runbook_alerts.yaml``: the runbook's five recommended alerts as a Prometheus rule file
  (``groups: [{name, interval, rules: [{alert, expr, for, labels, annotations}]}]``),
  written against the runbook profile's metric names.
- ``metrics.yaml``: per naming profile, the Prometheus series name of each metric *role*
  (:data:`ROLES`): the metric-name counterpart of :mod:`forensics.profiles`.

:func:`load_rules` reads the shipped file or any rule file a user gives (the deployed
platform's ``infrastructure/prometheus/alerts.yml``, say); :func:`metric_names` gives a
profile's names. Replaying rules is :mod:`forensics.analysis.alerts`' job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from forensics.errors import ForensicsError

RUNBOOK_RULES = "runbook_alerts.yaml"

ROLES: dict[str, tuple[str, str]] = {
    "delivery_seconds": ("histogram", "delivery time of a message, created -> DELIVERED (family: _bucket, _sum, _count)"),
    "delivered_total": ("counter", "messages delivered"),
    "failed_total": ("counter", "messages that ended FAILED"),
    "stuck_pending": ("gauge", "messages PENDING for longer than the stuck threshold (30 s)"),
    "consumer_lag": ("gauge", "consumer lag per group/client, topic and partition"),
    "http_client_requests": ("counter", "outgoing HTTP calls by service and status (Spring's http.client.requests)"),
    "platform_api_failures": ("counter", "failed calls to the platform API (runbook 2.2)"),
    "rate_limit_remaining": ("gauge", "platform rate limit remaining (runbook R2.1)"),
    "up": ("gauge", "1 when Prometheus could scrape the target"),
}
"""Metric role -> (Prometheus type, meaning)."""

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class RuleFileError(ForensicsError):
    """A rule file that cannot be read or does not have the Prometheus rule-file shape."""


@dataclass(frozen=True)
class Rule:
    """One alerting or recording rule of a Prometheus rule file."""

    name: str
    """Alert name (``alert:``) or recorded series name (``record:``)."""
    expr: str
    kind: str = "alert"
    """"alert" or "record"."""
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    group: str = ""
    interval_s: float | None = None
    """The group's evaluation interval, when the file sets one."""
    origin: str = ""
    """File the rule came from (a shipped file by name), or where else it was read."""

    @property
    def evidence(self) -> str | None:
        """The evidence derivation that replays this alert without metrics (annotation ``evidence``)."""
        return self.annotations.get("evidence") or None


@dataclass(frozen=True)
class MetricNames:
    """A profile's Prometheus series names by role (``None``: the profile exports none)."""

    profile: str
    names: dict[str, str | None]
    channel_label: str = "channel"
    group_label: str = "consumergroup"

    def name(self, role: str) -> str | None:
        if role not in ROLES:
            raise KeyError(f"unknown metric role {role!r}; known: {', '.join(ROLES)}")
        return self.names.get(role)

    def series(self) -> list[str]:
        """Every series name the profile exports (a histogram role gives _bucket, _sum, _count)."""
        out: list[str] = []
        for role, (kind, _) in ROLES.items():
            name = self.names.get(role)
            if not name:
                continue
            names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name]
            out.extend(n for n in names if n not in out)
        return out


def parse_duration(value: Any, where: str = "duration") -> float:
    """A Prometheus duration (``90s``, ``1h30m``, ``500ms``, ``0``) in seconds; numbers are seconds."""
    if isinstance(value, bool):
        raise RuleFileError(f"{where}: expected a duration like 5m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise RuleFileError(f"{where}: a duration cannot be negative ({value!r})")
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise RuleFileError(f"{where}: {value!r} is not a Prometheus duration (e.g. 30s, 5m, 1h30m)")
    return float(sum(int(n) * _UNIT_S[u] for n, u in parts))


def _strings(data: Any, where: str) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RuleFileError(f"{where}: expected a mapping of names to strings, got {type(data).__name__}")
    return {str(k): "" if v is None else str(v) for k, v in data.items()}


def parse_rules(data: Any, origin: str = "<rules>") -> list[Rule]:
    """Rules from a parsed rule file (``{"groups": [...]}``); RuleFileError names the bad place.

    Expressions are kept as text: whether the replay understands one is
    :mod:`forensics.analysis.alerts`' question, and a rule it cannot evaluate is reported, not fatal.
    """
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise RuleFileError(f"{origin}: expected a Prometheus rule file with a top-level 'groups' list")
    rules: list[Rule] = []
    for gi, group in enumerate(data["groups"]):
        gwhere = f"{origin}: groups[{gi}]"
        if not isinstance(group, dict) or not isinstance(group.get("name"), str) or not group["name"]:
            raise RuleFileError(f"{gwhere}: a group needs a 'name'")
        gwhere = f"{origin}: group {group['name']!r}"
        interval = parse_duration(group["interval"], f"{gwhere}.interval") if group.get("interval") else None
        items = group.get("rules") or []
        if not isinstance(items, list):
            raise RuleFileError(f"{gwhere}: 'rules' must be a list")
        for ri, item in enumerate(items):
            rwhere = f"{gwhere} rules[{ri}]"
            if not isinstance(item, dict):
                raise RuleFileError(f"{rwhere}: expected a mapping")
            alert, record = item.get("alert"), item.get("record")
            if bool(alert) == bool(record):
                raise RuleFileError(f"{rwhere}: a rule needs exactly one of 'alert' and 'record'")
            expr = item.get("expr")
            if not isinstance(expr, str | int | float) or isinstance(expr, bool) or not str(expr).strip():
                raise RuleFileError(f"{rwhere} ({alert or record}): missing 'expr'")
            if record and ("for" in item or "annotations" in item):
                raise RuleFileError(f"{rwhere} ({record}): a recording rule has no 'for' or 'annotations'")
            rules.append(Rule(
                name=str(alert or record), expr=str(expr).strip(), kind="alert" if alert else "record",
                for_s=parse_duration(item.get("for") or 0, f"{rwhere}.for"),
                keep_firing_for_s=parse_duration(item.get("keep_firing_for") or 0, f"{rwhere}.keep_firing_for"),
                labels=_strings(item.get("labels"), f"{rwhere}.labels"),
                annotations=_strings(item.get("annotations"), f"{rwhere}.annotations"),
                group=group["name"], interval_s=interval, origin=origin))
    return rules


def available_rule_files() -> list[str]:
    """Rule files shipped with the package."""
    return sorted(p.name for p in resources.files(__name__).iterdir()
                  if p.name.endswith((".yaml", ".yml")) and p.name != "metrics.yaml")


def load_rules(source: str | Path | None = None) -> list[Rule]:
    """Rules from a shipped rule file (default: the runbook's alerts) or a rule file by path."""
    ref = str(source or RUNBOOK_RULES)
    if ref in available_rule_files():
        text, origin = resources.files(__name__).joinpath(ref).read_text(encoding="utf-8"), ref
    else:
        path = Path(ref)
        if not path.is_file():
            raise RuleFileError(f"rule file {ref} does not exist (shipped: {', '.join(available_rule_files())})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleFileError(f"rule file {ref} cannot be read: {exc}") from exc
        origin = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(f"rule file {origin} is not valid YAML: {exc}") from exc
    return parse_rules(data, origin)


def _mapping() -> dict[str, Any]:
    text = resources.files(__name__).joinpath("metrics.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def metric_names(profile: Any = None) -> MetricNames:
    """The series names of ``profile`` (a Profile, its name, or None for the runbook's).

    A profile without an entry in ``metrics.yaml`` (a site's own YAML profile) gets the
    runbook's names; ``MetricNames.profile`` says which entry was used.
    """
    name = getattr(profile, "name", profile) or "runbook"
    table = _mapping()
    entry_name = name if name in table else "runbook"
    entry = table[entry_name]
    names = dict.fromkeys(ROLES)
    for role, value in (entry.get("metrics") or {}).items():
        if role not in ROLES:
            raise RuleFileError(f"metrics.yaml: {entry_name}: unknown role {role!r}; known: {', '.join(ROLES)}")
        names[role] = value or None
    return MetricNames(entry_name, names, entry.get("channel_label", "channel"),
                       entry.get("group_label", "consumergroup"))


def renames(to_profile: Any, from_profile: Any = "runbook") -> dict[str, str]:
    """Series name in ``from_profile`` -> name in ``to_profile``, for every role both export.

    A histogram role maps its _bucket, _sum and _count series; a counter role named like a
    histogram's _count (the runbook counts deliveries as message_delivery_time_seconds_count)
    takes precedence for that name.
    """
    src, dst = metric_names(from_profile), metric_names(to_profile)
    out: dict[str, str] = {}
    plain: dict[str, str] = {}
    for role, (kind, _) in ROLES.items():
        a, b = src.names.get(role), dst.names.get(role)
        if not a or not b or a == b:
            continue
        if kind == "histogram":
            out.update({f"{a}{s}": f"{b}{s}" for s in ("_bucket", "_sum", "_count")})
        else:
            plain[a] = b
    out.update(plain)
    return out
