"""``jira-authz``: serve, run the local stack, manage tokens, read the audit.

Token and audit commands work against Redis directly (``--redis-url``) or through the admin API
(``--admin-url``); without either they find a running local stack by themselves
(``authz.cli.store``). Exit codes: 0 success, 1 an error (one line on stderr: bad argument
value, unreachable store, refused operation), 2 a usage error (unknown flag, missing argument;
one line too), 3 ``token test`` answered DENY. Never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from authz.cli import render
from authz.config import Config, ConfigError, load_config
from authz.domain.issuing import DAY, TokenRequest, issue_warnings
from authz.domain.lifecycle import STATES, InvalidDuration
from authz.domain.lifecycle import parse_duration as _parse_duration

EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_DENY = 3
T = TypeVar("T")


class CliError(Exception):
    """A one-line reason for the user; exit code 1."""


def parse_duration(text: str, flag: str) -> float:
    """Seconds from '30d', '12h', '1d12h' (the domain's one duration parser)."""
    try:
        return _parse_duration(text)
    except InvalidDuration as e:
        raise CliError(f"{flag}: {e}") from None


def parse_time(text: str, flag: str) -> float:
    """ISO-8601 date/time (UTC when no zone), or a relative '15m', '2h', '7d' ago."""
    try:
        return time.time() - _parse_duration(text)
    except InvalidDuration:
        pass
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag}: {text!r} is not an ISO-8601 time or a duration like 2h") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def parse_absolute_time(text: str, flag: str) -> float:
    """An absolute ISO-8601 date or date-time (UTC when no zone): ``--expires-at 2h`` is not
    two hours ago, nor (here) two hours from now."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag}: {text!r} is not an absolute ISO-8601 date or time such as "
                       "2027-01-31 or 2027-01-31T12:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _config(args: argparse.Namespace) -> Config:
    from authz.cli.store import StoreChoiceError, check_redis_url

    cfg = load_config(getattr(args, "config", None))
    url = getattr(args, "redis_url", None)
    if url:
        try:
            check_redis_url(url, "--redis-url")
        except StoreChoiceError as e:
            raise CliError(str(e)) from None
        cfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, url=url))
    return cfg


def _run(args: argparse.Namespace, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Open the backend the flags choose, run one operation, map its errors to one line."""
    from authz.adapters.redis_store import StoreError, StoreUnavailable
    from authz.admin.operations import AdminError
    from authz.cli.backends import BackendError, open_backend
    from authz.cli.store import StoreChoiceError, masked_url

    target = _target(args)
    cfg = target.cfg

    async def go() -> T:
        backend = open_backend(args, cfg)
        try:
            return await fn(backend)
        finally:
            await backend.close()

    try:
        return asyncio.run(go())
    except AdminError as e:
        raise CliError(str(e)) from None
    except StoreUnavailable:
        raise CliError(f"cannot reach Redis at {masked_url(cfg.redis.url)} ({target.source})"
                       ) from None
    except (StoreError, BackendError, StoreChoiceError) as e:
        raise CliError(str(e)) from None
    except ValueError as e:  # redis-py's URL parser, for what the checks above let through
        raise CliError(f"{target.source}: {e}") from None
    except OSError as e:
        raise CliError(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None


def _target(args: argparse.Namespace) -> Any:
    """The store this command uses (said on stderr when not given explicitly), once."""
    from authz.cli.store import StoreChoiceError, choose

    cached = getattr(args, "_target", None)
    if cached is not None:
        return cached
    try:
        target = choose(args)
    except StoreChoiceError as e:
        raise CliError(str(e)) from None
    if target.note:
        print(f"jira-authz: {target.note}", file=sys.stderr)
    args._target = target
    return target


def _base_url_of(args: argparse.Namespace) -> str:
    """Snippets' base URL: --base-url, else jira.base_url (the local stack sets its own)."""
    from authz.admin.operations import DEFAULT_BASE_URL

    if getattr(args, "base_url", None):
        return str(args.base_url)
    return _target(args).cfg.jira.base_url or DEFAULT_BASE_URL


def _warn_limits(lines: Sequence[str], what: str = "") -> list[str]:
    """Lint warnings of lines just written, on stderr (they are warnings, not errors)."""
    from authz.domain.limits import lint

    found = lint(list(lines))
    for w in found:
        print(f"jira-authz: warning: {what}limit {w}", file=sys.stderr)
    return found


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


# --- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from authz import event_loop, logs
    from authz.server import serve

    cfg = _config(args)
    logs.setup(args.log_level or cfg.log.level)
    from authz.workers import default_workers

    # Every core by default (docs/performance.md "Serving model"); Envoy must list every port.
    workers = default_workers() if not args.workers else args.workers
    if workers != 1:
        from authz.workers import run

        extra = [f"--log-level={args.log_level}"] if args.log_level else []
        extra += [f"--config={args.config}"] if args.config else []
        extra += [f"--redis-url={args.redis_url}"] if args.redis_url else []
        extra += [f"--event-loop={args.event_loop}"]
        try:
            return run(cfg, workers, extra)
        except ValueError as e:
            raise CliError(str(e)) from None
    event_loop.run(serve(cfg), args.event_loop)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from authz.stack.local import run_up

    return run_up(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    if args.file and args.config and args.file != args.config:
        raise CliError("give the file once: --config FILE (or FILE)")
    path = args.config or args.file
    if not path:
        raise CliError("give the file to check: --config FILE")
    load_config(path)
    print(f"{path}: valid")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    import yaml

    from authz.config_doc import masked

    print(yaml.safe_dump(masked(_config(args)), sort_keys=False).rstrip())
    return 0


def cmd_config_docs(args: argparse.Namespace) -> int:
    from authz.config_doc import reference_markdown

    print(reference_markdown())
    return 0


def _expiry(args: argparse.Namespace, now: float) -> float | None:
    given = [f for f, v in (("--expires-in", args.expires_in),
                            ("--expires-in-days", args.expires_in_days),
                            ("--expires-at", args.expires_at)) if v is not None]
    if len(given) > 1:
        raise CliError(f"give one of {', '.join(given)}, not several")
    if args.expires_in is not None:
        seconds = parse_duration(args.expires_in, "--expires-in")
        if seconds <= 0:
            raise CliError("--expires-in must be > 0")
        return now + seconds
    if args.expires_in_days is not None:
        if args.expires_in_days <= 0:
            raise CliError("--expires-in-days must be > 0")
        return now + args.expires_in_days * DAY
    if args.expires_at is not None:
        return parse_absolute_time(args.expires_at, "--expires-at")
    return None


def cmd_token_create(args: argparse.Namespace) -> int:
    now = time.time()
    req = TokenRequest(
        label=args.label, user=args.user, logins=args.login, expires_at=_expiry(args, now),
        limits=args.limit, ips=args.ip, on_behalf_of=args.on_behalf_of, secret=args.secret,
        any_user=args.any_user,
    )
    token, secret = _run(args, lambda b: b.create(req))
    warnings = _warn_limits(token.limits)
    for w in issue_warnings(token):
        print(f"jira-authz: warning: {w}", file=sys.stderr)
        warnings.append(w)
    if args.json:
        _print_json({**render.token_json(token, now), "secret": secret, "warnings": warnings})
        return 0
    print(f"Created token {token.id} ({token.label or 'no label'}).")
    print(f"Secret — shown once, store it now: {secret}\n")
    print(render.snippets(token, secret, _base_url_of(args)))
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    extra: dict[str, float] = {}
    if args.expiring is not None:
        extra["expiring_within"] = parse_duration(args.expiring, "--expiring")
    if args.unused_for is not None:
        extra["unused_for"] = parse_duration(args.unused_for, "--unused-for")
    for k, v in extra.items():
        if v <= 0:
            raise CliError(f"--{k.replace('_within', '').replace('_', '-')} must be > 0")

    async def op(b: Any) -> list[Any]:
        out: list[Any] = []
        page = ""
        while True:
            tokens, page = await b.list(user=args.user, label=args.label, state=args.state,
                                        page_size=1000, page_token=page, **extra)
            out += tokens
            if not page:
                return out

    tokens = _run(args, op)
    now = time.time()
    if args.json:
        _print_json([render.token_json(t, now) for t in tokens])
    else:
        print(render.token_table(tokens, now))
    return 0


def cmd_token_show(args: argparse.Namespace) -> int:
    token = _run(args, lambda b: b.get(args.id))
    now = time.time()
    if args.json:
        _print_json(render.token_json(token, now))
    else:
        print(render.token_details(token, now))
    return 0


def cmd_token_edit(args: argparse.Namespace) -> int:
    if args.clear_limits and args.limit:
        raise CliError("give --limit lines or --clear-limits, not both")
    limits = [] if args.clear_limits else (args.limit or None)
    if args.label is None and limits is None:
        raise CliError("nothing to change: give --label, --limit or --clear-limits")
    token = _run(args, lambda b: b.update(args.id, label=args.label, limits=limits))
    now = time.time()
    warnings = _warn_limits(token.limits) if limits else []
    if args.json:
        _print_json({**render.token_json(token, now), "warnings": warnings})
    else:
        print(f"Updated token {token.id}.\n" + render.token_details(token, now))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    token = _run(args, lambda b: b.revoke(args.id))
    if args.json:
        _print_json(render.token_json(token, time.time()))
    else:
        print(f"Revoked token {token.id} at {render.iso(token.revoked_at)}.")
    return 0


def cmd_token_prune(args: argparse.Namespace) -> int:
    older = parse_duration(args.older_than, "--older-than")
    report = _run(args, lambda b: b.prune(older_than=older, apply=args.apply))
    now = time.time()
    if args.json:
        _print_json({"applied": report.applied, "older_than_seconds": older, "tokens": [
            {**render.token_json(it.token, now), "ended_at": render.iso(it.ended_at),
             "removed": it.removed} for it in report.items]})
        return 0
    print(render.table(
        [(it.token.id, it.token.label, it.token.user or "(any)", it.token.state(now),
          render.iso(it.ended_at), "removed" if it.removed else ("gone" if report.applied
                                                                 else "would remove"))
         for it in report.items],
        ("ID", "LABEL", "USER", "STATE", "ENDED", "ACTION"),
    ))
    n = len(report.items)
    if report.applied:
        print(f"\nRemoved {sum(it.removed for it in report.items)} token record(s); their "
              "audit history is kept.")
    else:
        print(f"\nDry run: {n} token record(s) expired or revoked for {args.older_than} or "
              "longer. Run again with --apply to remove them.")
    return 0


def cmd_token_rotate(args: argparse.Namespace) -> int:
    if args.grace is not None:
        if args.grace_seconds:
            raise CliError("give --grace or --grace-seconds, not both")
        args.grace_seconds = parse_duration(args.grace, "--grace")
    if args.grace_seconds < 0:
        raise CliError("--grace-seconds must be >= 0")
    new, secret, old = _run(args, lambda b: b.rotate(args.id, grace_seconds=args.grace_seconds))
    now = time.time()
    if args.json:
        _print_json({**render.token_json(new, now), "secret": secret,
                     "previous": render.token_json(old, now)})
        return 0
    when = "now" if not args.grace_seconds else f"at {render.iso(old.revoked_at)}"
    print(f"New token {new.id} replaces {old.id} (revoked {when}).")
    print(f"Secret — shown once, store it now: {secret}\n")
    print(render.snippets(new, secret, _base_url_of(args)))
    return 0


def cmd_token_test(args: argparse.Namespace) -> int:
    body = None
    if args.body:
        try:
            body = Path(args.body).read_bytes()
        except OSError as e:
            raise CliError(f"--body: cannot read {args.body}: {e.strerror}") from None
    from authz.domain.dry_run import DryRunError, header_pairs

    try:
        headers = header_pairs(args.header)
    except DryRunError as e:
        raise CliError(str(e)) from None
    result = _run(args, lambda b: b.test_limits(
        args.id, method=args.method, url=args.url, body=body, login=args.login or "",
        client_ip=args.client_ip or "", headers=headers))
    if args.json:
        _print_json(dataclasses.asdict(result))
    else:
        print(render.test_line(args.method, result))
    return 0 if result.allowed else EXIT_DENY


def cmd_token_import(args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror}") from None
    report = _run(args, lambda b: b.import_extender(data, apply=args.apply))
    invalid = [it for it in report.items if it.status == "invalid"]
    warnings = _import_warnings(report)
    if args.json:
        _print_json({
            "applied": report.applied,
            "tokens": [{"label": it.label, "user": it.user, "status": it.status,
                        "problems": list(it.problems), "id": report.ids.get(it.index),
                        "warnings": warnings.get(it.index, [])}
                       for it in report.items],
        })
    else:
        print(render.table(
            [(str(it.index), it.label, it.user or "(any)", it.status,
              report.ids.get(it.index, ""), "; ".join(it.problems)) for it in report.items],
            ("#", "LABEL", "USER", "STATUS", "ID", "PROBLEMS"),
        ))
        if report.applied:
            print(f"\nImported {len(report.ids)} token(s).")
        elif invalid:
            print(f"\nNothing imported: {len(invalid)} token(s) are invalid; fix them and retry.")
        else:
            print("\nDry run: nothing written. Run again with --apply to import.")
    if invalid:
        raise CliError(f"{len(invalid)} token(s) refused; nothing imported")
    return 0


def _import_warnings(report: Any) -> dict[int, list[str]]:
    """Lint warnings per imported token, also on stderr: Extender accepted lines that never
    match (``[get]/rest/…``), and an import is where they arrive in bulk."""
    from authz.domain.limits import lint

    out: dict[int, list[str]] = {}
    for it in report.items:
        found = list(report.warnings.get(it.index, ()))
        if not found and it.request is not None:
            found = lint(list(it.request.limits))
        if found:
            out[it.index] = found
            for w in found:
                print(f"jira-authz: warning: token #{it.index} ({it.label}): limit {w}",
                      file=sys.stderr)
    return out


def cmd_token_snippet(args: argparse.Namespace) -> int:
    token = _run(args, lambda b: b.get(args.id))
    base = _base_url_of(args)
    if args.json:
        _print_json(render.snippets_json(token, None, base))
    else:
        print(render.snippets(token, None, base))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.decision and args.decision not in ("allow", "deny"):
        raise CliError("--decision must be allow or deny")
    filters = {
        "token_id": args.token, "user": args.user, "decision": args.decision,
        "since": parse_time(args.since, "--since") if args.since else None,
        "until": parse_time(args.until, "--until") if args.until else None,
        "limit": args.limit,
    }
    records = _run(args, lambda b: b.audit(**filters))
    records = list(reversed(records))  # oldest first reads like a log
    _show_audit(args, records)
    if not args.follow:
        return 0
    seen = {r.id for r in records}
    since = max((r.timestamp for r in records), default=time.time())
    try:
        while True:
            time.sleep(1.0)
            window = {**filters, "since": since, "limit": 1000}
            batch = _run(args, lambda b, w=window: b.audit(**w))
            fresh = [r for r in reversed(batch) if r.id not in seen]
            seen.update(r.id for r in fresh)
            if fresh:
                since = max(since, *(r.timestamp for r in fresh))
                _show_audit(args, fresh, header=False)
    except KeyboardInterrupt:
        return 0


def _show_audit(args: argparse.Namespace, records: Sequence[Any], header: bool = True) -> None:
    if args.json and not args.follow:
        # One JSON document, like every other --json (list --json is an array too).
        _print_json([render.audit_json(r) for r in records])
    elif args.json:
        # --follow never ends, so it streams JSON Lines (one event per line).
        for r in records:
            _print_json(render.audit_json(r))
    else:
        text = render.audit_table(records)
        print(text if header else "\n".join(text.splitlines()[1:]), flush=True)


# --- parser -----------------------------------------------------------------------------------


def _store_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where tokens live (one of)")
    g.add_argument("--config", help="YAML config file (environment JIRA_AUTHZ_* overrides it)")
    g.add_argument("--redis-url", help="Redis URL (default: JIRA_AUTHZ_REDIS_URL, --config, the "
                   "local stack started in this directory, else redis://127.0.0.1:6379/0)")
    g.add_argument("--admin-url", help="admin API host:port (grpc://host:port; https://host:port "
                   "for TLS)")
    g.add_argument("--admin-token-file", help="file with the admin bearer secret "
                   "(default: environment JIRA_AUTHZ_ADMIN_TOKEN)")
    g.add_argument("--admin-ca", help="CA bundle for a TLS admin API")
    g.add_argument("--admin-cert", help="client certificate for mTLS")
    g.add_argument("--admin-key", help="client key for mTLS")
    p.add_argument("--json", action="store_true",
                   help="machine-readable output: one JSON document on stdout")


def _base_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="Jira URL used in the snippets (default: jira.base_url "
                   "from the config, the local stack's Envoy, or https://jira.example.com)")


def _token_parsers(sub: Any) -> None:
    tok = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")

    p = tok.add_parser("create", help="create a token; prints its secret once")
    _store_flags(p)
    _base_url(p)
    p.add_argument("--label", default="", help="a name for people (lists, audit)")
    p.add_argument("--user", help="bind the token to this Jira user")
    p.add_argument("--login", action="append", default=[],
                   help="extra accepted login for a bound token (repeatable)")
    p.add_argument("--any-user", action="store_true",
                   help="create an UNBOUND token that any login may use (needs "
                   "policy.allow_unbound)")
    p.add_argument("--expires-in", metavar="DURATION",
                   help="expiry from now: 30d, 12h, 90m, 1d12h")
    p.add_argument("--expires-in-days", type=float, help=argparse.SUPPRESS)
    p.add_argument("--expires-at", metavar="TIME",
                   help="absolute ISO-8601 expiry, e.g. 2027-01-31 or 2027-01-31T00:00:00Z")
    p.add_argument("--limit", action="append", default=[], metavar="LINE",
                   help="restriction line (repeatable), e.g. '[get].*/rest/api/2/issue/.*'")
    p.add_argument("--ip", action="append", default=[], metavar="CIDR",
                   help="allowed client address or network (repeatable), e.g. 10.0.0.0/8")
    p.add_argument("--on-behalf-of", action="append", default=[], metavar="USER|*",
                   help="user the token may act for via the contextUser header (repeatable; "
                   "* for any)")
    p.add_argument("--secret", help="import an existing secret (e.g. from Extender)")
    p.set_defaults(func=cmd_token_create)

    p = tok.add_parser("list", help="list tokens")
    _store_flags(p)
    p.add_argument("--user", help="bound to this user (case-insensitive)")
    p.add_argument("--label", help="label contains (case-insensitive)")
    p.add_argument("--state", choices=list(STATES),
                   help="rotating: revoked at the end of a rotation's grace period")
    p.add_argument("--expiring", metavar="DURATION",
                   help="usable tokens expiring within this, e.g. 14d")
    p.add_argument("--unused-for", metavar="DURATION",
                   help="usable tokens not used (never used: since creation) for this, e.g. 30d")
    p.set_defaults(func=cmd_token_list)

    p = tok.add_parser("prune", help="remove records of tokens expired or revoked long ago "
                       "(dry run by default; audit history is kept)")
    _store_flags(p)
    p.add_argument("--older-than", required=True, metavar="DURATION",
                   help="expired or revoked for at least this long, e.g. 30d")
    p.add_argument("--apply", action="store_true", help="remove them (each removal audited)")
    p.set_defaults(func=cmd_token_prune)

    p = tok.add_parser("show", help="one token's details")
    _store_flags(p)
    p.add_argument("id", help="token id (from token list)")
    p.set_defaults(func=cmd_token_show)

    p = tok.add_parser("edit", help="replace a token's label and/or limit lines")
    _store_flags(p)
    p.add_argument("id", help="token id (from token list)")
    p.add_argument("--label", help="the new label")
    p.add_argument("--limit", action="append", default=[], metavar="LINE",
                   help="the new set of lines (repeatable; replaces every line)")
    p.add_argument("--clear-limits", action="store_true", help="remove every limit line")
    p.set_defaults(func=cmd_token_edit)

    p = tok.add_parser("revoke", help="revoke a token on every replica within a second")
    _store_flags(p)
    p.add_argument("id", help="token id (from token list)")
    p.set_defaults(func=cmd_token_revoke)

    p = tok.add_parser("rotate", help="new secret, same settings; old token revoked")
    _store_flags(p)
    _base_url(p)
    p.add_argument("id", help="token id (from token list)")
    p.add_argument("--grace-seconds", type=float, default=0.0,
                   help="keep the old token working this long (default: revoke now)")
    p.add_argument("--grace", metavar="DURATION",
                   help="the same as a duration: 10m, 1h, 2d")
    p.set_defaults(func=cmd_token_rotate)

    p = tok.add_parser("test", help="would the token allow this request? (no traffic sent)")
    _store_flags(p)
    p.add_argument("id", help="token id (from token list)")
    p.add_argument("--method", default="GET", help="HTTP method (default GET)")
    p.add_argument("--url", required=True,
                   help="https://jira/rest/api/2/issue/A-1, or a path resolved against "
                   "jira.base_url as the server resolves it")
    p.add_argument("--login", help="Basic login the client sends (default: the token's user; "
                   "required for an unbound token)")
    p.add_argument("--client-ip", metavar="ADDR",
                   help="client address Envoy sees (default 127.0.0.1)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="request header (repeatable), e.g. 'contextUser: bob' for on-behalf-of "
                   "or 'X-Forwarded-For: 10.1.2.3'")
    p.add_argument("--body", metavar="FILE",
                   help="file with the JSON request body (for JsonData lines)")
    p.set_defaults(func=cmd_token_test)

    p = tok.add_parser("import", help="import Extender's tokenTools/get JSON (dry run by default)")
    _store_flags(p)
    p.add_argument("file", help="JSON file, or - for standard input")
    p.add_argument("--apply", action="store_true", help="write the tokens")
    p.set_defaults(func=cmd_token_import)

    p = tok.add_parser("snippet", help="print the curl/JavaScript/Python snippets again")
    _store_flags(p)
    _base_url(p)
    p.add_argument("id", help="token id (from token list)")
    p.set_defaults(func=cmd_token_snippet)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), like every other error (exit 1)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jira-authz")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="jira-authz", description="API tokens for Jira behind Envoy ext_authz.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage error, 3 token test answered DENY.",
    )
    parser.add_argument("--version", action="version", version=f"jira-authz {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the ext_authz gRPC server")
    p.add_argument("--config", help="YAML config file (environment JIRA_AUTHZ_* overrides it)")
    p.add_argument("--redis-url", help="Redis URL (default: config, or JIRA_AUTHZ_REDIS_URL)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="overrides log.level")
    p.add_argument("--workers", type=int, metavar="N",
                   help="N server processes on ports check, check+1, ... (default and 0: one "
                   "per available core, the container's CPU limit included); Envoy must list "
                   "every port (docs/performance.md)")
    p.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                   help="event loop under grpc.aio (default uvloop: less CPU per Check)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("up", help="run the local stack: Redis, authz, Envoy, stub Jira")
    from authz.stack.local import add_up_arguments

    add_up_arguments(p)
    p.set_defaults(func=cmd_up)

    _token_parsers(sub)

    conf = sub.add_parser("config", help="validate or show the configuration").add_subparsers(
        dest="config_command", required=True, metavar="ACTION")
    p = conf.add_parser("check", help="validate a config file (and JIRA_AUTHZ_* overrides)")
    p.add_argument("--config", help="YAML config file to check")
    p.add_argument("file", nargs="?", help="the same, as a positional argument")
    p.set_defaults(func=cmd_config_check)
    p = conf.add_parser("show", help="print the effective config, credentials masked")
    p.add_argument("--config", help="YAML config file")
    p.set_defaults(func=cmd_config_show)
    p = conf.add_parser("docs", help="print the configuration reference (markdown)")
    p.set_defaults(func=cmd_config_docs)

    p = sub.add_parser("audit", help="who used which token, and when")
    _store_flags(p)
    p.add_argument("--token", help="token id")
    p.add_argument("--user", help="token user, login or effective user")
    p.add_argument("--since", help="ISO-8601 time or a duration ago such as 2h")
    p.add_argument("--until", help="ISO-8601 time or a duration ago")
    p.add_argument("--decision", help="allow or deny")
    p.add_argument("--limit", type=int, default=100, help="most events shown (default 100)")
    p.add_argument("--follow", action="store_true",
                   help="keep printing new events (with --json: one JSON object per line)")
    p.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as e:
        print(f"jira-authz: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the contract is one line, even for what nobody foresaw
        text = " ".join(str(e).split())[:300]
        print(f"jira-authz: unexpected {type(e).__name__}: {text} (please report this)",
              file=sys.stderr)
        return EXIT_FAIL
