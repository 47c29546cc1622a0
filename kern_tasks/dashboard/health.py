"""The health page (/health): fires per minute by status, fire lag (a slot's first attempt
start minus the slot) and overdue schedules over the last hour or day, drawn as server-side
SVG (charts.py) from one grouped read of the run rows (scheduler/history.py), and the
schedules overdue now. The caller's rows only (admin and the security key: all).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from kern_tasks.dashboard import charts, links
from kern_tasks.dashboard.reads import reads_of
from kern_tasks.dashboard.render import page, zone_of
from kern_tasks.dashboard.schedules import viewer_zone
from kern_tasks.scheduler.history import FAILURES, HEALTH_WINDOWS, OVERDUE_AFTER_S, Health, check_window

router = APIRouter()

LAG_COLORS = {"max lag": "#c77700", "average lag": "#2f6fed"}
# Where the x axis is labelled: every 10 minutes of the hour, every 2 hours of the day.
TICK_EVERY_S = {60: 600, 900: 7200}
OVERDUE_COLORS = {"overdue schedules": "#d0342c"}


def labels_of(health: Health, zone: str | None) -> list[str]:
    tz = zone_of(zone)
    return [datetime.fromtimestamp(b.start, tz).strftime("%H:%M") for b in health.buckets]


def pictures(health: Health, zone: str | None) -> dict[str, object]:
    """The three charts and the figures above them."""
    labels = labels_of(health, zone)
    ticks = [i for i, b in enumerate(health.buckets) if b.start % TICK_EVERY_S[health.bucket_s] == 0]
    half_ticks = ticks if health.bucket_s == 60 else ticks[::2]  # a half-width chart: every 4 hours of a day
    per_minute = health.bucket_s / 60
    rates = [{status: n / per_minute for status, n in b.counts.items()} for b in health.buckets]
    totals = health.totals()
    fires = sum(totals.values())
    failed = sum(totals.get(status, 0) for status in FAILURES)
    lag_count = sum(b.lag_count for b in health.buckets)
    lag_sum = sum((b.lag_avg_s or 0) * b.lag_count for b in health.buckets)
    lag_max = max((b.lag_max_s for b in health.buckets if b.lag_max_s is not None), default=None)
    shown = [status for status in charts.STATUS_COLORS if totals.get(status)]
    unit = "fires/min" if health.bucket_s == 60 else f"fires/min (avg over {health.bucket_s // 60} min)"
    return {
        "fires": fires, "failed": failed, "failed_share": failed / fires if fires else 0.0,
        "lag_avg": lag_sum / lag_count if lag_count else None, "lag_max": lag_max,
        "fires_chart": charts.stacked_bars(labels, rates, colors=charts.STATUS_COLORS, unit=unit,
                                           title="fires per minute by status", ticks=ticks),
        "fires_legend": charts.legend(charts.STATUS_COLORS, shown),
        "lag_chart": charts.lines(labels, {"max lag": [b.lag_max_s for b in health.buckets],
                                           "average lag": [b.lag_avg_s for b in health.buckets]},
                                  colors=LAG_COLORS, unit="s", title="fire lag (first attempt start minus slot)",
                                  ticks=half_ticks, width=charts.HALF),
        "lag_legend": charts.legend(LAG_COLORS, list(LAG_COLORS)),
        "overdue_chart": charts.stacked_bars(labels, [{"overdue schedules": float(b.overdue)} for b in health.buckets],
                                             colors=OVERDUE_COLORS, unit="schedules", title="overdue schedules",
                                             ticks=half_ticks, integer=True, width=charts.HALF),
    }


@router.get("/health", response_class=HTMLResponse)
async def health_page(request: Request, window: str = Query("1h", max_length=8),
                      tz: str | None = Query(None, max_length=64)) -> HTMLResponse:
    zone = viewer_zone(tz)
    check_window(window, HEALTH_WINDOWS)
    reads = reads_of(request)
    health = await reads.health(window)
    overdue_now, overdue = await reads.overdue()
    return page(request, "health.html", "health", title="Health", health=health, windows=list(HEALTH_WINDOWS),
                viewer_zone=zone, overdue_now=overdue_now, overdue=overdue, overdue_after=OVERDUE_AFTER_S,
                schedule_url=links.schedule, **pictures(health, zone))
