"""Formatting shared by the server-rendered pages: UTC times, durations, fingerprints."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django import template
from django.utils.html import format_html

from swrly.keys.fingerprint import fingerprint_prefix

register = template.Library()


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


@register.filter
def utctime(value: datetime | None, empty: str = "—") -> str:
    """`<time>` in UTC; static/swrly/localtime.js rewrites its text to the viewer's timezone.

    The UTC value stays in `datetime` and in the `title` (shown on hover).
    """
    return _time_html(value, empty, "seconds")


@register.filter
def utctime_ms(value: datetime | None, empty: str = "—") -> str:
    """`utctime` with milliseconds (in the text and `datetime`), for the key timeline, where a
    deposit, its take and its release often share a second; localtime.js keeps them."""
    return _time_html(value, empty, "milliseconds")


def _time_html(value: datetime | None, empty: str, timespec: str) -> str:
    if value is None:
        return empty
    utc = _utc(value)
    stamp = utc.isoformat(timespec=timespec).replace("+00:00", "Z")
    text = stamp.replace("T", " ").replace("Z", " UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', stamp, text, text)


def format_duration(delta: timedelta) -> str:
    """A short human duration: "850 ms", "12.4 s", "3 min 05 s", "2 h 04 min"."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.simple_tag
def duration(start: datetime | None, end: datetime | None, running: str = "running") -> str:
    """How long from start to end; `running` when it has started but not ended."""
    if start is None:
        return "—"
    if end is None:
        return running
    return format_duration(end - start)


@register.filter
def seconds(value: int | None) -> str:
    """A TTL or latency given in seconds, as a short duration."""
    if value is None or value == "":
        return "—"
    return format_duration(timedelta(seconds=int(value)))


@register.filter
def short_fingerprint(value: str | None) -> str:
    """The first 12 hex characters of a fingerprint, full value on hover."""
    if not value:
        return "—"
    return format_html('<code title="{}">{}…</code>', value, value[:12])


@register.filter
def key_name(hint: str | None, fingerprint: str | None) -> str:
    """A key as every page names it: its hint and its fingerprint's first hex digits, so two
    keys whose hints are alike are told apart (`{{ key.hint|key_name:key.fingerprint }}`).
    The whole fingerprint is in the title; swrly.keys.fingerprint.key_name is the text form."""
    prefix = fingerprint_prefix(fingerprint or "")
    if not prefix:
        return format_html('<code class="key-hint">{}</code>', hint) if hint else "—"
    fp = format_html(
        '<span class="key-fp" title="fingerprint {}">fp <code>{}</code></span>', fingerprint, prefix
    )
    if not hint:
        return format_html('<span class="key-name">{}</span>', fp)
    return format_html(
        '<span class="key-name"><code class="key-hint">{}</code> {}</span>', hint, fp
    )


@register.filter
def pretty_json(value: Any) -> str:
    """A JSON value indented for reading (escaped by the template as usual)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@register.filter
def compact_json(value: Any) -> str:
    """A JSON value on one line."""
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


@register.filter
def run_target_id(target: str) -> uuid.UUID | None:
    """The run id in an audit target "run:<uuid>", or None."""
    if not target.startswith("run:"):
        return None
    try:
        return uuid.UUID(target[4:])
    except ValueError:
        return None


@register.filter
def short_target(target: str) -> str:
    """An audit target "kind:<uuid>" as "kind:<first 8>…" with the whole in the title; any
    other target as it is."""
    kind, sep, rest = target.partition(":")
    try:
        uuid.UUID(rest)
    except ValueError:
        return target
    return format_html('<span title="{}">{}{}<code>{}</code>…</span>', target, kind, sep, rest[:8])
