"""/stats and /export in a private chat: a scope's figures with a chart, and the 台账 file.

`/stats [period] [scope]` (either order): grid leaders and members for their grids,
community supervisors for their community, street supervisors for their street, and any
grid or building below those. Default: this month so far, the widest node the person holds a
role at. `/export [period] [scope] [xlsx|csv]`: supervisors of a community or street, and
grid leaders for their own grid.

Both answers go through the outbox (an upload: the chart as a photo, the ledger as a
document), so the rate limits and retries hold for them as for every other message. The
figures are read, the transaction (and the inbox row's lock with it) ends, then the chart or
the file is made with no transaction open, and the answer is written in a new one.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from aiogram import F
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.outbox import enqueue
from bot.context import Ctx, Tx
from bot.ledger import charts, figures, rounds
from bot.ledger.figures import Figures, Period
from bot.ledger.rounds import RoundFigures
from bot.org.directory import Directory, Place, directory
from bot.org.roles import Actor, RoleName
from bot.telegram.session import DIRECT_KIND
from handlers.common import RouterSpec, open_tx
from storage.db import reading

log = logging.getLogger(__name__)
router = RouterSpec("stats")

KIND_RANK = {"street": 0, "community": 1, "grid": 2, "building": 3}
STATS_ROLES = (RoleName.STREET_SUPERVISOR, RoleName.COMMUNITY_SUPERVISOR,
               RoleName.GRID_LEADER, RoleName.GRID_MEMBER)
# Grid leaders may export their own grid's ledger: it is theirs to keep (they keep it in
# Excel by hand today). Grid members and building heads may not.
EXPORT_ROLES = (RoleName.STREET_SUPERVISOR, RoleName.COMMUNITY_SUPERVISOR,
                RoleName.GRID_LEADER)
# What the panel below the days shows, for a scope of each kind.
CHILDREN: dict[str, Literal["grid", "community"]] = {"community": "grid", "street": "community"}
FORMATS = ("xlsx", "csv")


@dataclass(frozen=True)
class Ask:
    """What a /stats or /export asked for, checked against the person's roles."""

    period: Period
    place: Place
    fmt: str = "xlsx"


class Refusal(Exception):
    """The label that answers a request we do not carry out, with its context."""

    def __init__(self, label: str, **context: Any) -> None:
        super().__init__(label)
        self.label = label
        self.context = context


# --- who asks for what -------------------------------------------------------------------


def held_places(d: Directory, actor: Actor, roles: tuple[RoleName, ...]) -> list[Place]:
    """The street, community and grid nodes the actor holds one of `roles` at, widest first."""
    places = [p for n in actor.node_ids(*roles) if (p := d.place(n)) is not None
              and p.kind in ("street", "community", "grid")]
    return sorted(places, key=lambda p: (KIND_RANK[p.kind], p.position, p.id))


def within(d: Directory, place: Place, held: list[Place]) -> bool:
    ids = {p.id for p in held}
    return place.id in ids or any(a.id in ids for a in d.ancestors(place))


def parse_ask(tx: Tx, d: Directory, args: str, held: list[Place], *, export: bool) -> Ask:
    """The period, scope and format in the command's words, in any order."""
    tz = tx.policy.timezone
    period: Period | None = None
    place: Place | None = None
    fmt = "xlsx"
    usage = "export_usage" if export else "stats_usage"
    for word in args.split():
        if export and word.lower() in FORMATS:
            fmt = word.lower()
        elif (typed := user_text.ascii_digits(word))[:1].isdigit():
            if period is not None:
                raise Refusal(usage)
            try:
                # ASCII digits only, full-width ones converted: "²⁰²⁶" and "٢٠٢٦" are no year.
                if not typed.isascii():
                    raise ValueError(word)
                period = Period.parse(typed, tz)
            except ValueError:
                raise Refusal("stats_bad_period", code=word) from None
        else:
            if place is not None:
                raise Refusal(usage)
            found = d.by_code.get(word) or d.by_code.get(word.upper())
            if found is None or found.kind not in KIND_RANK:
                raise Refusal("stats_unknown_scope", code=word)
            place = found
    if place is None:
        place = held[0]
    elif not within(d, place, held):
        raise Refusal("stats_out_of_scope", code=place.code, name=place.name)
    if period is None:
        period = this_month(tx) if export else month_so_far(tx)
    return Ask(period, place, fmt)


def this_month(tx: Tx) -> Period:
    return Period.month_of(tx.now, tx.policy.timezone)


def month_so_far(tx: Tx) -> Period:
    """From the 1st of this month to the end of today (local days)."""
    month = this_month(tx)
    today = tx.now.astimezone(tx.texts.tz).date()
    first = month.start.astimezone(tx.texts.tz).date()
    return Period.parse(f"{first.isoformat()}..{today.isoformat()}", tx.policy.timezone)


async def _asked(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                 actor: Actor, *, export: bool) -> tuple[Tx, Ask] | None:
    """The operation and what /stats or /export asked for; None when the person was told
    why not (not their role, not their area, words the bot cannot read)."""
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return None
    d = await directory(db)
    held = held_places(d, actor, EXPORT_ROLES if export else STATS_ROLES)
    if not held:
        await message.answer(tx.texts.label("export_not_allowed" if export
                                            else "stats_not_staff"))
        return None
    try:
        ask = parse_ask(tx, d, command.args or "", held, export=export)
        await figures.askable(db, ask.period, tx.now)
    except Refusal as no:
        await message.answer(tx.texts.label(no.label, **no.context))
        return None
    except figures.PeriodRefused as no:
        await message.answer(tx.texts.label(no.label, **no.context))
        return None
    return tx, ask


# --- /stats ------------------------------------------------------------------------------


@router.message(Command("stats", "export"), F.chat.type != "private")
async def in_group(message: Message, ctx: Ctx) -> None:
    """The figures are for the person asking: never posted in a building's group."""
    await message.reply(ctx.texts.label("stats_in_private", link=ctx.deep_link("start")))


@router.message(Command("stats"))
async def stats(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                actor: Actor) -> None:
    asked = await _asked(message, command, db, ctx, actor, export=False)
    if asked is None:
        return
    tx, ask = asked
    # The update's own transaction lets go; the figures are read in a read transaction,
    # which never holds up a resident's report.
    await db.commit()
    async with reading(db) as read:
        # A running period is measured as of now, an ended one as of its end.
        fig = await figures.compute(read, ask.period, ask.place.code, now=tx.now)
        days = await figures.daily(read, ask.period, ask.place.code)
        by = CHILDREN.get(ask.place.kind)
        children = (await figures.breakdown(read, ask.period, ask.place.code, by, now=tx.now)
                    if by else [])
        # 网格巡查与走访: for a grid and the areas above it (None for a building).
        round_figures = await rounds.compute(read, ask.period, ask.place.code, now=tx.now)
    unknown = unknown_years(tx, ask.period)
    # The chart is drawn with no transaction (and no lock) held.
    png = await chart(tx, ask, days, children, by)
    text = tx.texts.render("stats", **stats_view(tx, ask, fig, children, by, unknown,
                                                 chart=png is not None,
                                                 round_figures=round_figures))
    await enqueue(
        db, f"stats:{message.chat.id}:{message.message_id}", message.chat.id, text, tx.now,
        person_id=actor.id, kind=DIRECT_KIND,
        upload=png, upload_name=f"stats-{ask.place.code}-{ask.period.label}.png",
        upload_kind="photo" if png is not None else None,
    )


def chart_font(ctx: Ctx) -> Any:
    """GRIDBOT_CHART_FONT, which build_app keeps in ctx."""
    return ctx.extra.get("chart_font")


async def chart(tx: Tx, ask: Ask, days: list[figures.DayCount],
                children: list[tuple[str, str, Figures]], by: str | None) -> bytes | None:
    """The PNG, drawn in a worker thread; None (and an error in the log) without a CJK font
    or when drawing fails, so the figures still go out as text."""
    t = tx.texts
    labels = charts.Labels(
        received=t.plain("chart_received"), closed=t.plain("chart_closed"),
        on_time_share=t.plain("chart_on_time_share"), on_time_rate=t.plain("chart_on_time_rate"),
        count=t.plain("chart_count"), by_day=t.plain("chart_by_day"),
        by_child=t.plain(f"chart_by_{by}") if by else "",
    )
    per_day = charts.series([f"{x.day.month}-{x.day.day}" for x in days],
                            [x.received for x in days], [x.closed for x in days],
                            [x.closed_on_time for x in days])
    per_child = charts.Series(
        tuple(name for _, name, _ in children), tuple(f.received for _, _, f in children),
        tuple(f.closed for _, _, f in children), tuple(f.on_time_rate for _, _, f in children),
    ) if children else None
    title = f"{ask.place.name} {ask.period.label}"
    try:
        font = charts.find_font(chart_font(tx.ctx))
        return await asyncio.to_thread(charts.render, title, per_day, labels, font, per_child)
    except charts.NoFont as exc:
        log.error("the /stats chart is skipped: %s", exc)
    except Exception:
        log.exception("the /stats chart could not be drawn; the figures go as text")
    return None


def unknown_years(tx: Tx, period: Period) -> list[int]:
    """Years the period's working-time deadlines run into that the working calendar does not
    know (neither the official schedule nor the registry's days): there they skip weekends
    only. None while no category counts working time (as bot.cases.deadlines.calendar_warning)."""
    if not tx.policy.working:
        return []
    # A deadline in the period may come from a working-day SLA of a case reported before it,
    # and a case reported in it may be due after it: a month on either side covers them.
    return tx.policy.calendar.unknown_years(period.start - timedelta(days=31),
                                            period.end + timedelta(days=31))


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def hours(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def figures_view(fig: Figures) -> dict[str, Any]:
    """The counts as they are, rates as percentages and hours to one decimal ("—": none)."""
    view: dict[str, Any] = fig.as_dict()
    for name in figures.RATES:
        view[name] = percent(getattr(fig, name))
    for name in ("accept_hours_median", "accept_hours_p90", "resolve_hours_median",
                 "resolve_hours_p90"):
        view[name] = hours(getattr(fig, name))
    return view


def rounds_view(fig: RoundFigures | None) -> dict[str, Any] | None:
    """The rounds' counts as they are, rates as percentages, hours to one decimal; None
    for a scope without grids."""
    if fig is None:
        return None
    view = fig.as_dict()
    for name in rounds.RATES:
        view[name] = percent(getattr(fig, name))
    view["patrol_hours"] = hours(fig.patrol_hours)
    return view


def stats_view(tx: Tx, ask: Ask, fig: Figures, children: list[tuple[str, str, Figures]],
               by: str | None, unknown: list[int], *, chart: bool,
               round_figures: RoundFigures | None = None) -> dict[str, Any]:
    """The variables of stats.j2 (tests/template_context_stats.py has the same)."""
    return {
        "stats": {"scope": ask.place.name, "code": ask.place.code, "period": ask.period.label,
                  "fig": figures_view(fig), "by": by or "", "unknown_years": unknown,
                  "chart": chart, "rounds": rounds_view(round_figures)},
        # A name of its own: the panel's rows (a `for` over a top-level list).
        "stats_children": [dict(figures_view(f), name=name, code=code)
                           for code, name, f in children],
    }


# --- /export -----------------------------------------------------------------------------


@router.message(Command("export"))
async def export(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                 actor: Actor) -> None:
    from bot.ledger.export import write_ledger  # openpyxl is loaded only when a ledger is made

    asked = await _asked(message, command, db, ctx, actor, export=True)
    if asked is None:
        return
    tx, ask = asked
    # The update's own transaction lets go; the rows stream in a read transaction, which
    # never holds up a resident's report however long the export takes.
    await db.commit()
    out = io.BytesIO()
    fmt: Literal["xlsx", "csv"] = "csv" if ask.fmt == "csv" else "xlsx"
    async with reading(db) as read:
        rows = await write_ledger(read, ask.period, ask.place.code, out, fmt, tx.texts.locale,
                                  now=tx.now)
    name = f"{tx.texts.plain('export_file_stem')}-{ask.place.code}-{ask.period.label}.{fmt}"
    text = tx.texts.render("stats_export", export={
        "scope": ask.place.name, "period": ask.period.label, "rows": rows})
    await enqueue(
        db, f"export:{message.chat.id}:{message.message_id}", message.chat.id, text,
        tx.now, person_id=actor.id, kind=DIRECT_KIND,
        upload=out.getvalue(), upload_name=name, upload_kind="document",
    )
