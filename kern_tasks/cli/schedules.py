"""`kern-tasks schedules ...`: the schedules of KERN_DATABASE_URL, by name or id.

    list [--enabled|--disabled] [--limit N] [--page N]      show NAME        runs NAME [--limit N]
    create NAME --cron EXPR --endpoint PATH [--tz] [--method] [--payload JSON] [--if-exists raise|skip|update]
    update NAME [--cron] [--tz] [--endpoint] [--method] [--payload] [--name] [--queue] [--priority] ...
    enable NAME | disable NAME [--reason] | trigger NAME | delete NAME
    backfill NAME --from WHEN --to WHEN

Each calls ScheduleManager, which checks everything (a bad field exits 2 naming it; an
unknown name or id exits 1). `--json` prints agno's field names (the HTTP API's bodies).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kern_tasks.cli import output
from kern_tasks.db import Database
from kern_tasks.scheduler import Schedule, ScheduleManager, ScheduleRun
from kern_tasks.scheduler.backfill import instant
from kern_tasks.settings import Settings

# Not the `unset` of any option: tells "not given" from "given as null".
_UNSET: Any = object()


def _manager(settings: Settings) -> ScheduleManager:
    return ScheduleManager(Database(settings=settings))


def _api() -> Any:
    """The HTTP API's bodies (agno's field names), imported only for --json: importing the
    AgentOS package costs a command a second or more."""
    from kern_tasks.os import schemas

    return schemas


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return _api().ScheduleResponse.model_validate(schedule.to_dict()).model_dump()  # type: ignore[no-any-return]


def run_json(run: ScheduleRun) -> dict[str, Any]:
    return _api().ScheduleRunResponse.model_validate(run.to_dict()).model_dump()  # type: ignore[no-any-return]


def _payload(text: Any) -> Any:
    """--payload: JSON text ("null" clears it); the manager checks it is an object."""
    if text is _UNSET:
        return _UNSET
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise output.bad_input("payload", f"is not JSON: {exc}") from None


# The kinds beside cron (kern_tasks.scheduler.kinds): option -> field; the instants are
# read as ISO 8601 (without an offset: in --tz) or epoch seconds, as a backfill's range is.
KIND_OPTIONS = {"interval": "interval_seconds", "max_runs": "max_runs", "expires_after": "expires_after_seconds"}
INSTANT_OPTIONS = ("run_at", "start_at", "end_at")


def _kinds(args: argparse.Namespace, zone: str) -> dict[str, Any]:
    given = {field: getattr(args, option) for option, field in KIND_OPTIONS.items()
             if getattr(args, option) is not _UNSET}
    for option in INSTANT_OPTIONS:
        value = getattr(args, option)
        if value is not _UNSET:
            given[option] = None if value in ("", "null") else instant(option, value, zone)
    return given


def _when(schedule: Schedule) -> str:
    if schedule.interval_seconds is not None:
        return f"every {schedule.interval_seconds}s"
    if schedule.run_at is not None:
        return f"once at {output.local_time(schedule.run_at, schedule.timezone)}"
    return f"cron {schedule.cron_expr}" if schedule.cron_expr else "on demand"


def _show(schedule: Schedule, as_json: bool, status: str | None = None) -> int:
    if as_json:
        output.print_json({**({"status": status} if status else {}), **schedule_json(schedule)})
        return output.OK
    if status:
        output.console().print(f"{status}: {schedule.name} ({schedule.id})")
    output.fields([
        ("name", schedule.name), ("id", schedule.id), ("when", _when(schedule)), ("timezone", schedule.timezone),
        ("window", " to ".join(output.local_time(t, schedule.timezone) or "-" for t in (schedule.start_at, schedule.end_at))
         if schedule.start_at is not None or schedule.end_at is not None else None),
        ("max_runs", schedule.max_runs), ("expires_after", schedule.expires_after_seconds),
        ("endpoint", f"{schedule.method} {schedule.endpoint}"), ("enabled", schedule.enabled),
        ("disabled_reason", schedule.disabled_reason),
        ("next run", output.local_time(schedule.next_run_at, schedule.timezone)),
        ("queue", schedule.queue or "(default)"), ("priority", schedule.priority),
        ("payload", json.dumps(schedule.payload) if schedule.payload is not None else None),
        ("description", schedule.description), ("owner", schedule.user_id),
        ("policies", f"misfire {schedule.misfire_policy}, overlap {schedule.overlap_policy}, "
                     f"retries {schedule.max_retries}, timeout {schedule.timeout_seconds}s"),
    ])
    return output.OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    page = _manager(settings).list_page(enabled=args.enabled, limit=args.limit, page=args.page)
    if args.json:
        output.print_json(_api().PaginatedResponse.of(page, _api().ScheduleResponse))
        return output.OK
    rows = [(s.name, s.id, _when(s), s.timezone, f"{s.method} {s.endpoint}", "yes" if s.enabled else "no",
             output.local_time(s.next_run_at, s.timezone) if s.enabled else "", s.queue or "")
            for s in page.data]
    output.table(f"{page.total_count} schedule(s), page {page.page} of {max(page.total_pages, 1)}",
                 ["name", "id", "when", "timezone", "endpoint", "enabled", "next run", "queue"], rows)
    return output.OK


def _create(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    payload = _payload(args.payload)
    schedule = manager.create(
        name=args.name, cron=args.cron, endpoint=args.endpoint, **_kinds(args, args.tz), method=args.method, timezone=args.tz,
        payload=None if payload is _UNSET else payload, description=args.description, if_exists=args.if_exists,
        enabled_on_create=not args.disabled, queue=args.queue, priority=args.priority,
        alert_after_failures=args.alert_after_failures,
        **({"timeout_seconds": args.timeout} if args.timeout is not None else {}),
        **({"max_retries": args.max_retries} if args.max_retries is not None else {}),
    )
    return _show(schedule, args.json, status="saved")


UPDATABLE = {"new_name": "name", "cron": "cron", "tz": "timezone", "endpoint": "endpoint", "method": "method",
             "description": "description", "queue": "queue", "priority": "priority", "timeout": "timeout_seconds",
             "max_retries": "max_retries", "alert_after_failures": "alert_after_failures"}


def _update(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    current = manager.find(args.schedule)
    changes = {field: getattr(args, option) for option, field in UPDATABLE.items()
               if getattr(args, option) is not _UNSET}
    changes.update(_kinds(args, args.tz if args.tz is not _UNSET else current.timezone))
    payload = _payload(args.payload)
    if payload is not _UNSET:
        changes["payload"] = payload
    if not changes:
        raise output.bad_input("schedule", "nothing to change: pass at least one option (see --help)")
    updated = manager.update(current.id, **changes)
    if updated is None:
        raise manager_missing(args.schedule)
    return _show(updated, args.json, status="updated")


def manager_missing(name_or_id: str) -> Exception:
    from kern_tasks.errors import NotFound

    return NotFound(f'no schedule with id or name "{name_or_id}"')


def _state(action: str) -> Any:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        manager = _manager(settings)
        current = manager.find(args.schedule)
        if action == "enable":
            changed = manager.enable(current.id)
        else:
            changed = manager.disable(current.id, reason=args.reason)
        if changed is None:
            raise manager_missing(args.schedule)
        return _show(changed, args.json, status=f"{action}d")

    return handler


def _trigger(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    run = manager.trigger_run(manager.find(args.schedule).id)
    if args.json:
        output.print_json(run_json(run))
    else:
        output.console().print(f"queued run {run.id} of {args.schedule} (beat publishes it within about a second)")
    return output.OK


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    current = manager.find(args.schedule)
    if not manager.delete(current.id):
        raise manager_missing(args.schedule)
    if args.json:
        output.print_json({"deleted": True, "id": current.id, "name": current.name})
    else:
        output.console().print(f"deleted {current.name} ({current.id}) and its runs")
    return output.OK


def _runs(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    current = manager.find(args.schedule)
    page = manager.runs(current.id, limit=args.limit, page=args.page)
    if args.json:
        output.print_json(_api().PaginatedResponse.of(page, _api().ScheduleRunResponse))
        return output.OK
    zone = current.timezone
    rows = [(r.id, output.local_time(r.scheduled_for, zone), r.attempt,
             "manual" if r.manual else ("backfill" if r.backfill else "cron"), r.status, r.status_code,
             output.local_time(r.triggered_at, zone), (r.error or "")[:60]) for r in page.data]
    output.table(f"{page.total_count} run(s) of {current.name}, page {page.page} of {max(page.total_pages, 1)}",
                 ["id", "slot", "attempt", "kind", "status", "code", "started", "error"], rows)
    return output.OK


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    manager = _manager(settings)
    current = manager.find(args.schedule)
    done = manager.backfill(current.id, args.start, args.end)
    if args.json:
        output.print_json(_api().BackfillResponse.model_validate(done.to_dict()).model_dump())
        return output.OK
    output.console().print(
        f"{current.name}: {len(done.slots)} slot(s) from {output.local_time(done.start, current.timezone)} "
        f"to {output.local_time(done.end, current.timezone)}: {len(done.added)} queued, "
        f"{done.existing} had a run already"
    )
    return output.OK


def _kind_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=int, default=_UNSET, help="every N seconds of elapsed time (instead of --cron)")
    parser.add_argument("--run-at", default=_UNSET, help="once at this instant (ISO 8601; without an offset: in --tz)")
    parser.add_argument("--start-at", default=_UNSET, help="no run before this instant")
    parser.add_argument("--end-at", default=_UNSET, help="no run after this instant")
    parser.add_argument("--max-runs", type=int, default=_UNSET, help="at most N runs, then disabled")
    parser.add_argument("--expires-after", type=int, default=_UNSET, help="skip a run not started within N seconds")


def _by_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("schedule", help="the schedule's name or id")
    parser.add_argument("--json", action="store_true", help="JSON for scripts (agno's field names)")


def add_commands(commands: Any) -> None:
    group = commands.add_parser("schedules", help="list, show, create, change and run schedules")
    actions = group.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="the schedules, newest first")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_const", const=True, default=None)
    state.add_argument("--disabled", dest="enabled", action="store_const", const=False)
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--json", action="store_true", help="JSON for scripts ({data, meta}, agno's field names)")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="one schedule")
    _by_name(show)
    show.set_defaults(handler=lambda args, settings: _show(_manager(settings).find(args.schedule), args.json))

    create = actions.add_parser("create", help="create a schedule (or, with --if-exists, keep or update it)")
    create.add_argument("name")
    create.add_argument("--cron", default=None, help='e.g. "0 9 * * 1-5" (or --interval, or --run-at)')
    create.add_argument("--endpoint", required=True, help='a route of the AgentOS, e.g. "/agents/my-agent/runs"')
    create.add_argument("--tz", default="UTC", help='IANA zone, e.g. "America/New_York" (default UTC)')
    create.add_argument("--method", default="POST")
    create.add_argument("--payload", default=_UNSET, help='the request body, a JSON object, e.g. \'{"message": "hi"}\'')
    create.add_argument("--description", default=None)
    create.add_argument("--if-exists", default="raise", help="raise (default), skip or update")
    create.add_argument("--queue", default=None, help="the Celery queue of its fires (default: the app's)")
    create.add_argument("--priority", type=int, default=None, help="the message priority, 0-9")
    create.add_argument("--timeout", type=int, default=None, help="seconds per attempt")
    create.add_argument("--max-retries", type=int, default=None)
    create.add_argument("--alert-after-failures", type=int, default=None,
                        help="failed slots in a row that raise an alert (default 3; 0: never)")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    _kind_options(create)
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_create)

    update = actions.add_parser("update", help="change a schedule: only the options given")
    _by_name(update)
    update.add_argument("--name", dest="new_name", default=_UNSET, help="a new name")
    for option in ("cron", "tz", "endpoint", "method", "description", "queue"):
        update.add_argument(f"--{option}", default=_UNSET)
    update.add_argument("--priority", type=int, default=_UNSET)
    update.add_argument("--timeout", type=int, default=_UNSET)
    update.add_argument("--max-retries", type=int, default=_UNSET)
    update.add_argument("--alert-after-failures", type=int, default=_UNSET)
    update.add_argument("--payload", default=_UNSET, help='a JSON object; "null" removes it')
    _kind_options(update)
    update.set_defaults(handler=_update)

    for action, text in (("enable", "enable it (its next run computed from now)"), ("disable", "disable it")):
        sub = actions.add_parser(action, help=text)
        _by_name(sub)
        if action == "disable":
            sub.add_argument("--reason", default=None, help="kept as disabled_reason")
        sub.set_defaults(handler=_state(action))

    trigger = actions.add_parser("trigger", help="queue one run now (the cron does not move)")
    _by_name(trigger)
    trigger.set_defaults(handler=_trigger)

    delete = actions.add_parser("delete", help="delete it and its runs")
    _by_name(delete)
    delete.set_defaults(handler=_delete)

    runs = actions.add_parser("runs", help="its attempts, newest first")
    _by_name(runs)
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--page", type=int, default=1)
    runs.set_defaults(handler=_runs)

    backfill = actions.add_parser("backfill", help="run every slot in [--from, --to) that has no run yet")
    _by_name(backfill)
    backfill.add_argument("--from", dest="start", required=True, help="ISO 8601 (without an offset: in its zone)")
    backfill.add_argument("--to", dest="end", required=True, help="ISO 8601, at most now")
    backfill.set_defaults(handler=_backfill)
