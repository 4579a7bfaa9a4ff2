"""The `xiaobao` command line: serve, chat, ask, knowledge-base tools, migrations.

Outside tools (evaluation scripts, deployment) call these commands, so their output and
exit codes are contracts (see `shared/spec/interfaces.md`): 0 on success, 2 on bad usage
or input with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bot.config import Config, ConfigError, load_config

EXIT_USAGE = 2
PID_FILE = Path("var/xiaobao.pid")


class UsageError(Exception):
    """Bad usage or bad input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config) if args.config else None)


def _setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Drivers log statement parameters (names, phone numbers) at DEBUG: never let them.
    for noisy in ("aiosqlite", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


# -- serve / chat / db ---------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service until interrupted; SIGHUP reloads the knowledge base.

    With `--workers N` above 1 this process supervises N worker processes on one port
    (`bot.workers`); each worker is this same command with the hidden `--worker NUMBER`.
    """
    from aiohttp import web

    from bot.app import create_app
    from bot.services import SERVICES

    config = _config(args)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1 and args.worker is None:
        return _serve_workers(args, config)
    _setup_logging(config)
    worker: int | None = args.worker
    app = create_app(config)
    if worker is not None:
        from bot.workers import exit_with_parent

        exit_with_parent(app, os.getppid())

    async def on_startup(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        index = app[SERVICES].knowledge

        def reload() -> None:
            task = loop.create_task(index.reload())
            task.add_done_callback(_log_reload)

        loop.add_signal_handler(signal.SIGHUP, reload)
        address = f"http://{config.http.host}:{config.http.port}"
        if worker is None:
            PID_FILE.parent.mkdir(parents=True, exist_ok=True)
            PID_FILE.write_text(str(os.getpid()))
            print(f"xiaobao is serving on {address}", flush=True)
        else:  # the supervisor owns the pid file
            print(f"xiaobao worker {worker} (pid {os.getpid()}) is serving on {address}",
                  flush=True)
        link = await _first_admin_link(app[SERVICES].sessions, config) if (
            worker is None or worker == 1) else None
        if link:
            print("xiaobao: no administrator can sign in yet. Open this one-time link to set "
                  f"the password of the account \"admin\":\n{link}", flush=True)
        freeze_long_lived()

    async def on_cleanup(app: web.Application) -> None:
        if worker is None:
            PID_FILE.unlink(missing_ok=True)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host=config.http.host, port=config.http.port, print=None,
                access_log=None, reuse_port=worker is not None)
    return 0


def _serve_workers(args: argparse.Namespace, config: Config) -> int:
    """Migrate once, then supervise `--workers` processes sharing the port (PostgreSQL)."""
    from bot import db
    from bot.workers import supervise

    if db.async_url(config.database.url).get_backend_name() == "sqlite":
        raise UsageError(f"--workers {args.workers} needs PostgreSQL: SQLite has a single "
                         "writer, so serve one worker or set database.url to postgresql://")
    _setup_logging(config)
    if config.database.auto_migrate:
        db.upgrade_sync(config.database.url)
    command = [sys.executable, "-m", "bot.cli",
               *(["--config", args.config] if args.config else []), "serve"]
    environ = {**os.environ, "XIAOBAO_DATABASE_AUTO_MIGRATE": "false"}  # done just now
    print(f"xiaobao: supervisor (pid {os.getpid()}) starting {args.workers} workers on "
          f"http://{config.http.host}:{config.http.port}", flush=True)
    return supervise(command, args.workers, PID_FILE, environ)


def _log_reload(task: asyncio.Task[Any]) -> None:
    error = task.exception()
    if error is not None:
        logging.getLogger("xiaobao").error("knowledge reload failed, keeping the old index: %s",
                                           error)
    else:
        freeze_long_lived()  # the new index lives as long as the old one did


def freeze_long_lived() -> None:
    """Keep what start-up built out of the cyclic garbage collector's full passes.

    The knowledge index, the classifiers, the ORM's metadata and the imported modules are
    about 115,000 tracked objects that live as long as the process, and a full (oldest
    generation) collection walks them all with the event loop stopped: 123 ms on the
    development VM, 0.3 ms once they are frozen.  Start-up itself runs three such passes;
    a 30 s load run triggered none, but over days of uptime the objects that survive the
    younger generations pile up and set one off now and then, a stall of every request in
    flight.  Frozen objects are still freed by reference counting; the knowledge index
    that a reload replaces is freed that way (no cycle holds it), so freezing again after
    a reload keeps nothing alive.  Garbage is collected first, so none of it is kept.
    """
    gc.collect()
    gc.freeze()


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to the engine in the terminal."""
    from bot.services import open_services
    from handlers.terminal import run_chat

    config = _config(args)
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        services = await open_services(config)
        try:
            await run_chat(services.chat, args.user)
        finally:
            await services.close()

    asyncio.run(main())
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    from bot import db

    config = _config(args)
    db.upgrade_sync(config.database.url)
    print("database is up to date")
    return 0


# -- one-shot question answering -----------------------------------------------------------
def _read_lines() -> list[str]:
    data = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    return data.splitlines()


def _run_batch(
    args: argparse.Namespace,
    make_answer: Callable[[], Callable[[str], dict[str, Any]]],
    field: str,
) -> int:
    """The shared shape of `ask`, `check-message` and `triage`: one text or --jsonl.

    Input is validated before the (slow) model is built, so usage errors answer at once.
    """
    if args.jsonl:
        if args.text:
            raise UsageError("--jsonl reads stdin; give no text arguments")
        lines = _read_lines()
        answer = make_answer()
        out = sys.stdout
        for line in lines:
            out.write(json.dumps(answer(line), ensure_ascii=False) + "\n")
        out.flush()
        return 0
    text = " ".join(args.text or [])
    if not text.strip():
        raise UsageError(f"give the {field} to look at (or --jsonl with one per line on stdin)")
    result = make_answer()(text)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(args.render(result))
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer questions from the knowledge base, as every channel would."""
    from bot.fitted import knowledge_source
    from knowledge.answer import ask_result, render_ask
    from knowledge.index import build_matcher

    config = _config(args)
    limit = config.chat.max_text_chars

    def make_answer() -> Callable[[str], dict[str, Any]]:
        matcher = build_matcher(knowledge_source(config))
        return lambda text: ask_result(matcher, text[:limit])

    args.render = render_ask
    return _run_batch(args, make_answer, "question")


def _scam_checker(config: Config) -> Any:
    from bot.fitted import knowledge_source, scam_advice
    from classifiers.scam import build_scam_checker
    from knowledge.index import build_matcher

    source = knowledge_source(config)
    return build_scam_checker(source.cache_dir, scam_advice(build_matcher(source).base_))


def cmd_check_message(args: argparse.Namespace) -> int:
    """Scam check of messages a consumer received (or --eval on a labelled file)."""
    from classifiers.scam import read_messages
    from classifiers.scam_evaluation import evaluate, render_report

    config = _config(args)
    if args.eval:
        if args.text or args.jsonl:
            raise UsageError("--eval takes a file; give no text and no --jsonl")
        try:
            messages = read_messages(Path(args.eval))
        except (OSError, ValueError) as error:
            raise UsageError(str(error)) from None
        report = evaluate(_scam_checker(config), messages)
        print(json.dumps(report.as_dict(), ensure_ascii=False) if args.json
              else render_report(report))
        return 0

    def make_answer() -> Callable[[str], dict[str, Any]]:
        checker = _scam_checker(config)
        return lambda text: checker.check(text).as_dict()

    args.render = _render_check
    return _run_batch(args, make_answer, "message")


def _render_check(result: dict[str, Any]) -> str:
    lines = [f"{result['verdict']} ({result['type'] or '-'}, score {result['score']:.2f})"]
    lines += [f"  - {reason}" for reason in result["reasons"]]
    return "\n".join([*lines, "", result["advice"]])


def cmd_triage(args: argparse.Namespace) -> int:
    """Classify and route complaint narratives (writes nothing)."""
    from bot.fitted import knowledge_source
    from classifiers.triage import build_triage

    config = _config(args)

    def make_answer() -> Callable[[str], dict[str, Any]]:
        triage = build_triage(knowledge_source(config).cache_dir)
        return lambda text: triage.classify(text).as_dict()

    args.render = _render_triage
    return _run_batch(args, make_answer, "complaint narrative")


def _render_triage(result: dict[str, Any]) -> str:
    institution = result["institution"]
    named = f"{institution['name']} ({institution['id']})" if institution else "-"
    lines = [
        f"institution: {named}",
        f"sector: {result['sector'] or '-'}   business: {result['business']}   "
        f"cause: {result['cause']}",
        f"risk: {'YES ' + '; '.join(result['risk_reasons']) if result['risk'] else 'no'}",
    ]
    if result["agent_led"]:
        lines.append("suspected agent-led: " + "; ".join(result["agent_reasons"]))
    return "\n".join(lines)


# -- knowledge-base tools ------------------------------------------------------------------
def cmd_kb_check(args: argparse.Namespace) -> int:
    """Validate the knowledge base; print every problem as file:line."""
    from bot.fitted import knowledge_source
    from knowledge.base import KnowledgeError, coverage, load_knowledge

    source = knowledge_source(_config(args))
    try:
        base = load_knowledge(source.data_dir, source.topics_file)
    except KnowledgeError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{len(error.problems)} problem(s) in the knowledge base", file=sys.stderr)
        return EXIT_USAGE
    counts = coverage(base)
    empty = [topic for topic, count in counts.items() if count == 0]
    print(f"knowledge base OK: {len(base.entries)} entries, "
          f"{sum(len(e.questions) for e in base.entries)} questions, "
          f"{len(counts) - len(empty)}/{len(counts)} topics covered")
    if empty:
        print("topics without entries: " + ", ".join(empty))
    return 0


def cmd_kb_reload(args: argparse.Namespace) -> int:
    """Check the base, then ask the running service (SIGHUP) to swap its index."""
    if cmd_kb_check(args) != 0:
        raise UsageError("knowledge base has problems; the running service keeps its index")
    pid_file = Path(args.pid_file)
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        raise UsageError(f"no running service found (pid file {pid_file})") from None
    print(f"reload requested from the service (pid {pid})")
    return 0


def cmd_kb_eval(args: argparse.Namespace) -> int:
    """Accuracy and refusal figures of the matcher on a labelled question file."""
    from bot.fitted import knowledge_source
    from knowledge.evaluation import evaluate, read_eval_file, render_report
    from knowledge.index import build_matcher

    try:
        items = read_eval_file(Path(args.file))
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    matcher = build_matcher(knowledge_source(_config(args)))
    report = evaluate(matcher, items)
    print(json.dumps(report.as_dict(), ensure_ascii=False) if args.json
          else render_report(report))
    return 0


# -- one-shot database commands ------------------------------------------------------------
def _on_database(config: Config, work: Callable[[Any], Awaitable[Any]], *,
                 migrate: bool = True) -> Any:
    """Run `await work(sessions)` on the configured database (migrated first unless
    `migrate` is false or `database.auto_migrate` is off), then close it."""
    from bot import db

    async def main() -> Any:
        if migrate and config.database.auto_migrate:
            await db.upgrade(config.database.url)
        engine = db.create_engine(config.database.url)
        try:
            return await work(db.create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _in_transaction(config: Config, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `await work(session)` in one committed transaction on the configured database."""

    async def run(sessions: Any) -> Any:
        async with sessions() as session, session.begin():
            return await work(session)

    return _on_database(config, run)


def cmd_kb_unanswered(args: argparse.Namespace) -> int:
    """The most frequent declined or low-score questions, for curators."""
    from knowledge.curation import most_unanswered

    async def read(sessions: Any) -> list[dict[str, Any]]:
        async with sessions() as session:
            return await most_unanswered(session, args.limit)

    rows = _on_database(_config(args), read, migrate=False)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no unanswered questions recorded")
    for row in rows:
        print(f"{row['count']:>4}  {row['text']}  (best: {row['best'] or '-'})")
    return 0


# -- WeChat --------------------------------------------------------------------------------
def cmd_wechat_push_menu(args: argparse.Namespace) -> int:
    """Publish `wechat.menu` as the official account's custom menu (or just print it)."""
    from handlers.wechat_api import publish_menu
    from handlers.wechat_protocol import MenuError, menu_definition

    config = _config(args)
    try:
        definition = menu_definition(config.wechat.menu)
    except MenuError as error:
        raise UsageError(f"wechat.menu: {error}") from None
    if args.print:
        print(json.dumps(definition, ensure_ascii=False, indent=2))
        return 0
    if not (config.wechat.app_id and config.wechat.app_secret):
        raise UsageError("publishing the menu needs XIAOBAO_WECHAT_APP_ID and "
                         "XIAOBAO_WECHAT_APP_SECRET")

    _on_database(config, lambda sessions: publish_menu(config.wechat, sessions, definition))
    print(f"menu published: {len(definition['button'])} top-level buttons")
    return 0


# -- oversight reports ---------------------------------------------------------------------
def cmd_report_quarterly(args: argparse.Namespace) -> int:
    """The quarter's complaints per institution, top three per sector and the other figures."""
    from bot.reports import ReportError, check_period, quarterly_report, render
    from classifiers.institutions import Directory

    try:
        check_period(args.year, args.quarter)
    except ReportError as error:
        raise UsageError(str(error)) from None
    config = _config(args)

    async def read(sessions: Any) -> Any:
        async with sessions() as session:
            return await quarterly_report(session, Directory.load(), args.year,
                                          args.quarter, sectors=args.sector)

    sys.stdout.write(render(_on_database(config, read), args.format))
    return 0


# -- staff accounts ------------------------------------------------------------------------
async def _first_admin_link(sessions: Any, config: Config) -> str | None:
    """On a fresh install, the one-time link for the first admin (never a password)."""
    from bot.staff_accounts import AccountError, StaffAccounts, invite_link

    try:
        async with sessions() as session, session.begin():
            token = await StaffAccounts(config.staff).first_admin_token(session)
    except AccountError as error:
        logging.getLogger("xiaobao").warning("no first-admin link: %s", error)
        return None
    return None if token is None else invite_link(config.staff.base_url(config.http), token)


def _staff_transaction(config: Config, work: Callable[..., Awaitable[Any]]) -> Any:
    """Run `work(session, accounts, directory)` in one committed transaction."""
    from bot.staff_accounts import StaffAccounts
    from classifiers.institutions import Directory

    return _in_transaction(
        config, lambda session: work(session, StaffAccounts(config.staff), Directory.load()))


def _print_invite(config: Config, username: str, token: str) -> None:
    from bot.staff_accounts import invite_link

    print(f"one-time link for {username} to set a password "
          f"(valid {config.staff.invite_hours} hours, works once):")
    print(invite_link(config.staff.base_url(config.http), token))


def cmd_staff_add(args: argparse.Namespace) -> int:
    """Create a dashboard account and print its one-time set-password link."""
    from bot.staff_accounts import AccountError, check_role
    from classifiers.institutions import Directory

    config = _config(args)
    try:  # refuse a wrong role or queue before touching the database
        check_role(Directory.load(), args.role, args.queue)
    except AccountError as error:
        raise UsageError(str(error)) from None

    async def work(session: Any, accounts: Any, directory: Any) -> tuple[str, str]:
        user = await accounts.create_user(session, directory, args.username, args.role,
                                          args.queue, args.name)
        return user.username, await accounts.issue_invite(session, user)

    try:
        username, token = _staff_transaction(config, work)
    except AccountError as error:
        raise UsageError(str(error)) from None
    print(f"created {args.role} account {username}")
    _print_invite(config, username, token)
    return 0


def cmd_staff_invite(args: argparse.Namespace) -> int:
    """Print a fresh one-time set-password link for an existing account."""
    from bot.staff_accounts import AccountError

    config = _config(args)

    async def work(session: Any, accounts: Any, directory: Any) -> tuple[str, str]:
        user = await accounts.find_user(session, args.username)
        if user is None or not user.active:
            raise AccountError(f"no active account named {args.username!r}")
        return user.username, await accounts.issue_invite(session, user)

    try:
        username, token = _staff_transaction(config, work)
    except AccountError as error:
        raise UsageError(str(error)) from None
    _print_invite(config, username, token)
    return 0


# -- notifications and Telegram links ------------------------------------------------------
def cmd_staff_link_code(args: argparse.Namespace) -> int:
    """Print a one-time code that links a Telegram chat to a queue (/link CODE there)."""
    from bot.notifications.links import issue_code
    from classifiers.institutions import Directory

    config = _config(args)
    queue = Directory.load().get(args.queue_id)
    if queue is None:
        raise UsageError(f"unknown queue id {args.queue_id!r} (an institution id such as "
                         "icbc, or assoc-bank / assoc-insurance)")
    code = _in_transaction(config, lambda session: issue_code(session, queue.id))
    print(code.code)
    print(f'send "/link {code.code}" in the Telegram group (or private chat) to link it to '
          f"{queue.id}; works once, until {code.expires_at:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_notifications_status(args: argparse.Namespace) -> int:
    """Outbox rows by status, and the dead ones (tracking numbers only, no personal data)."""
    from bot.notifications import outbox

    config = _config(args)

    async def work(session: Any) -> tuple[dict[str, int], list[Any]]:
        return await outbox.status_counts(session), await outbox.dead_rows(session, args.limit)

    counts, dead = _in_transaction(config, work)
    print("notifications: " + ", ".join(f"{status} {count}" for status, count in counts.items()))
    if dead:
        print("dead notifications (xiaobao notifications retry-dead sends them again):")
    for row in dead:
        tracking_no = str((row.payload or {}).get("tracking_no", "-"))
        print(f"  #{row.id} {row.kind} queue {row.queue_id} {tracking_no} "
              f"after {row.attempts} attempts: {row.last_error or '-'}")
    return 0


def cmd_notifications_retry_dead(args: argparse.Namespace) -> int:
    """Give every dead notification a fresh set of attempts (channels that had it keep it)."""
    from bot.models import utcnow
    from bot.notifications import outbox

    count = _in_transaction(_config(args),
                            lambda session: outbox.retry_dead(session, utcnow()))
    print(f"{count} dead notification(s) queued again")
    return 0


# -- wiring --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    parser = _Parser(prog="xiaobao", description="Financial consumer-protection chatbot")
    parser.add_argument("--config", help="path of config.toml (default: ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes sharing the port (above 1 needs PostgreSQL)")
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.set_defaults(func=cmd_serve)
    chat = commands.add_parser("chat", help="talk to the bot in the terminal")
    chat.add_argument("--user", default="console", help="conversation id (state is kept)")
    chat.set_defaults(func=cmd_chat)

    def batch(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> None:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("text", nargs="*")
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--json", action="store_true", help="one JSON object on stdout")
        mode.add_argument("--jsonl", action="store_true", help="one input per stdin line")
        sub.set_defaults(func=func)

    batch("ask", "answer one question from the knowledge base", cmd_ask)
    batch("check-message", "scam check of a message the consumer received", cmd_check_message)
    batch("triage", "classify and route one complaint narrative (writes nothing)", cmd_triage)
    commands.choices["check-message"].add_argument(
        "--eval", metavar="FILE", help="recall and false-positive rate on a labelled file")

    database = commands.add_parser("db", help="database tools")
    db_commands = database.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_commands.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    kb = commands.add_parser("kb", help="knowledge-base tools")
    kb_commands = kb.add_subparsers(dest="kb_command", required=True, parser_class=_Parser)
    kb_commands.add_parser("check", help="validate the data files").set_defaults(
        func=cmd_kb_check)
    reload = kb_commands.add_parser("reload", help="reload the running service's index")
    reload.add_argument("--pid-file", default=str(PID_FILE))
    reload.set_defaults(func=cmd_kb_reload)
    evaluate = kb_commands.add_parser("eval", help="measure the matcher on a labelled file")
    evaluate.add_argument("file")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_kb_eval)
    unanswered = kb_commands.add_parser("unanswered", help="most frequent unanswered questions")
    unanswered.add_argument("--limit", type=int, default=30)
    unanswered.add_argument("--json", action="store_true")
    unanswered.set_defaults(func=cmd_kb_unanswered)

    wechat = commands.add_parser("wechat", help="WeChat Official Account tools")
    wechat_commands = wechat.add_subparsers(dest="wechat_command", required=True,
                                            parser_class=_Parser)
    push_menu = wechat_commands.add_parser("push-menu", help="publish the custom menu")
    push_menu.add_argument("--print", action="store_true",
                           help="print the menu as WeChat will get it; publish nothing")
    push_menu.set_defaults(func=cmd_wechat_push_menu)

    staff = commands.add_parser("staff", help="staff dashboard accounts")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True,
                                          parser_class=_Parser)
    staff_add = staff_commands.add_parser(
        "add", help="create an account and print its one-time set-password link")
    staff_add.add_argument("username")
    staff_add.add_argument("--role", required=True,
                           help="institution, association, regulator or admin")
    staff_add.add_argument("--queue", help="queue id: the institution (e.g. icbc) for "
                           "institution staff, assoc-bank or assoc-insurance for associations")
    staff_add.add_argument("--name", help="display name (default: the username)")
    staff_add.set_defaults(func=cmd_staff_add)
    staff_invite = staff_commands.add_parser(
        "invite", help="print a new one-time set-password link for an existing account")
    staff_invite.add_argument("username")
    staff_invite.set_defaults(func=cmd_staff_invite)
    link_code = staff_commands.add_parser(
        "link-code", help="print a one-time code that links a Telegram chat to a queue")
    link_code.add_argument("queue_id", help="e.g. icbc, assoc-bank")
    link_code.set_defaults(func=cmd_staff_link_code)

    notifications = commands.add_parser("notifications", help="staff notification outbox")
    notification_commands = notifications.add_subparsers(
        dest="notifications_command", required=True, parser_class=_Parser)
    status = notification_commands.add_parser(
        "status", help="counts by status and the dead notifications")
    status.add_argument("--limit", type=int, default=50, help="dead rows to list")
    status.set_defaults(func=cmd_notifications_status)
    notification_commands.add_parser(
        "retry-dead", help="send the dead notifications again").set_defaults(
        func=cmd_notifications_retry_dead)

    report = commands.add_parser("report", help="oversight reports")
    report_commands = report.add_subparsers(dest="report_command", required=True,
                                            parser_class=_Parser)
    quarterly = report_commands.add_parser(
        "quarterly", help="complaints per institution and top three per sector of a quarter")
    quarterly.add_argument("--year", type=int, required=True, help="e.g. 2026")
    quarterly.add_argument("--quarter", type=int, required=True, help="1, 2, 3 or 4")
    quarterly.add_argument("--format", choices=("text", "csv", "json"), default="text")
    quarterly.add_argument("--sector", action="append", choices=("bank", "life", "property"),
                           help="only this sector (repeatable; default: all)")
    quarterly.set_defaults(func=cmd_report_quarterly)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `xiaobao` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except (UsageError, ConfigError) as error:
        print(f"xiaobao: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped reading: not an error
        sys.stderr.close()
        return 0
    except Exception as error:
        from knowledge.base import KnowledgeError

        if isinstance(error, KnowledgeError):
            print(f"xiaobao: knowledge base: {error.problems[0]}", file=sys.stderr)
            return EXIT_USAGE
        logging.getLogger("xiaobao").debug("command failed", exc_info=True)
        print(f"xiaobao: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
