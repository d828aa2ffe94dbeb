"""The dashboard's HTML: sign-in, the campaign list and one campaign's page.

Pages are plain HTML with htmx attributes (vendored, served from ``/ui/static``): the live
parts poll their fragment every few seconds and swap it in, and the buttons post with htmx
and swap the answer in, or post as plain forms when scripts are off. Every value is
escaped here; the numbers are worded by :mod:`~adloop.optimizer.dashboard_words`, the
figures drawn by :mod:`~adloop.optimizer.dashboard_charts`. Sections of the campaign page
are one function each, so new ones (e.g. creative insights) slot into ``_SECTIONS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from adloop.optimizer.dashboard_charts import colour, interval_chart, share_chart
from adloop.optimizer.dashboard_words import (
    INSIGHT_HEADER,
    insight_cells,
    percent,
    probability,
    rate_with_interval,
)

__all__ = ["campaign_page", "campaigns_page", "error_page", "insights_table", "live_campaign",
           "live_list", "login_page"]  # fmt: skip

POLL_SECONDS = 2


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return escape(str(value)) if value else "–"


def _count(value: Any) -> str:
    return f"{int(value or 0):,}"


def _loss(value: float | None, objective: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if objective == "value":
        return f"{value:.3g} per impression"
    return f"{value * 100:.3f} pp"


def layout(title: str, body: str, *, tenant: str | None = None) -> str:
    """The page shell: stylesheet, htmx, the header with the tenant and sign-out."""
    who = (
        f'<span class="tenant">Signed in as <b>{escape(tenant)}</b></span>'
        '<form method="post" action="/ui/logout" class="inline">'
        '<button type="submit" class="link">Sign out</button></form>'
        if tenant
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{{"includeIndicatorStyles": false}}'>
<title>{escape(title)} · adloop</title>
<link rel="stylesheet" href="/ui/static/dashboard.css">
<script src="/ui/static/htmx.min.js" defer></script>
</head><body>
<header><a href="/ui" class="brand">adloop</a><nav>{who}</nav></header>
<main>{body}</main>
</body></html>
"""


def login_page(error: str | None = None, next_path: str = "/ui") -> str:
    """Sign in with an API key; the key is kept in an HttpOnly cookie for this site only."""
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return layout(
        "Sign in",
        f"""<section class="card narrow"><h1>Sign in</h1>
<p>Use the API key of your tenant (from <code>adloop keys create</code>). You will see that
tenant's campaigns only.</p>{message}
<form method="post" action="/ui/login">
<input type="hidden" name="next" value="{escape(next_path)}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button></form></section>""",
    )


def error_page(status: int, message: str, *, tenant: str | None = None) -> str:
    """A plain page for 404 and friends, with the way back."""
    return layout(
        f"{status}",
        f'<section class="card narrow"><h1>{status}</h1><p>{escape(message)}</p>'
        '<p><a href="/ui">Back to the campaigns</a></p></section>',
        tenant=tenant,
    )


# -- the campaign list -----------------------------------------------------------------------


def live_list(rows: Sequence[Mapping[str, Any]]) -> str:
    """The campaigns table, polled and swapped in as a whole."""
    if not rows:
        inner = '<p class="muted">No campaigns yet. Create one with the API or the CLI.</p>'
    else:
        body = "".join(
            f"""<tr data-campaign="{escape(r["campaign_id"])}">
<td><a href="/ui/campaigns/{quote(r["campaign_id"])}">{escape(r.get("name") or r["campaign_id"])}
</a><div class="muted small">{escape(r["campaign_id"])}</div></td>
<td><span class="status {escape(r["status"])}">{escape(r["status"])}</span></td>
<td class="num" data-field="impressions">{_count(r["impressions"])}</td>
<td class="num">{_count(r["impressions_last_day"])}</td>
<td class="num">{_count(r["clicks"])}</td>
<td>{_leader(r)}</td>
<td>{_winner(r)}</td>
<td class="num">{r["n_active"]} serving{_pending_badge(r["n_pending"])}</td></tr>"""
            for r in rows
        )
        inner = f"""<table class="grid"><thead><tr><th>Campaign</th><th>Status</th>
<th class="num">Impressions</th><th class="num">Last 24 h</th><th class="num">Clicks</th>
<th>Leader</th><th>Winner</th><th class="num">Variants</th></tr></thead>
<tbody>{body}</tbody></table>"""
    return (
        f'<div id="campaigns" hx-get="/ui/fragments/campaigns" '
        f'hx-trigger="every {POLL_SECONDS}s" hx-swap="outerHTML">{inner}</div>'
    )


def _leader(row: Mapping[str, Any]) -> str:
    if not row.get("leader_label"):
        return '<span class="muted">–</span>'
    return (
        f"<b>{escape(row['leader_label'])}</b> · {probability(row.get('leader_probability'))} "
        f'best<div class="muted small">{escape(_short(row.get("leader_text") or "", 60))}</div>'
    )


def _winner(row: Mapping[str, Any]) -> str:
    if not row.get("winner_label"):
        return '<span class="muted">not yet</span>'
    return f"<b>{escape(row['winner_label'])}</b>, {_when(row.get('decided_at'))}"


def _pending_badge(n: int) -> str:
    return f' · <span class="badge">{n} to review</span>' if n else ""


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def campaigns_page(rows: Sequence[Mapping[str, Any]], tenant: str) -> str:
    """The tenant's campaigns, updating while traffic flows."""
    return layout(
        "Campaigns",
        '<div class="title-row"><h1>Campaigns</h1>'
        '<a class="button secondary" href="/ui/export/campaigns.csv" download>Export CSV</a>'
        f"</div>{live_list(rows)}",
        tenant=tenant,
    )


# -- one campaign ----------------------------------------------------------------------------


def _csv_link(campaign_id: str, table: str) -> str:
    return (
        f'<a class="csv" href="/ui/campaigns/{quote(campaign_id)}/export/{table}.csv" '
        f"download>CSV</a>"
    )


def _summary(page: Mapping[str, Any]) -> str:
    view, stopping = page["view"], page["stopping"]
    variants = view["variants"]
    totals = {k: sum(v[k] for v in variants) for k in ("impressions", "clicks", "conversions")}
    ctr = totals["clicks"] / totals["impressions"] if totals["impressions"] else None
    return f"""<section class="card summary"><p class="verdict {escape(stopping["state"])}"
data-testid="stopping">{escape(stopping["sentence"])}</p>
<dl class="kpis"><div><dt>Impressions</dt><dd data-testid="impressions">
{_count(totals["impressions"])}</dd></div>
<div><dt>Clicks</dt><dd data-testid="clicks">{_count(totals["clicks"])}</dd></div>
<div><dt>CTR</dt><dd>{percent(ctr)}</dd></div>
<div><dt>Conversions</dt><dd>{_count(totals["conversions"])}</dd></div>
<div><dt>Status</dt><dd><span class="status {escape(view["status"])}">
{escape(view["status"])}</span></dd></div></dl></section>"""


def _variants(page: Mapping[str, Any]) -> str:
    view = page["view"]
    objective = view.get("objective") or "ctr"
    campaign_id = view["campaign_id"]
    rows = []
    for i, v in enumerate(page["variants"]):
        retire = ""
        if v["status"] == "active":
            retire = (
                f'<form method="post" class="inline" hx-post="{_action(campaign_id, v, "retire")}"'
                f' action="{_action(campaign_id, v, "retire")}" hx-target="#live" '
                f'hx-swap="outerHTML" hx-confirm="Retire variant {v["label"]}? It gets no '
                f'more traffic."><button class="small secondary" type="submit">Retire</button>'
                "</form>"
            )
        leader = " leader" if v["variant_id"] == page["stopping"].get("leader") else ""
        written = escape(v.get("generator") or "given")
        if v.get("model_version"):
            written += f' <span class="muted small">{escape(v["model_version"])}</span>'
        rows.append(f"""<tr class="{escape(v["status"])}{leader}"
data-variant="{escape(v["variant_id"])}"><td>{_swatch(i)}
<b>{escape(v["label"])}</b></td><td class="text">{escape(v.get("text") or "")}</td>
<td><span class="status {escape(v["status"])}">{escape(v["status"])}</span></td>
<td class="num" data-field="impressions">{_count(v["impressions"])}</td>
<td class="num" data-field="clicks">{_count(v["clicks"])}</td>
<td class="num">{_rate(v, "ctr", "clicks")}</td>
<td class="num">{_count(v["conversions"])}</td>
<td class="num">{_rate(v, "cvr", "conversions")}</td>
<td class="num">{probability(v["probability_best"])}</td>
<td class="num">{_loss(v["expected_loss"], objective)}</td>
<td class="num">{percent(v["share"], 1)}</td><td>{written}</td><td>{retire}</td></tr>""")
    return f"""<section class="card"><div class="title-row"><h2>Variants</h2>
{_csv_link(campaign_id, "variants")}</div>
<div class="scroll"><table class="grid" id="variants"><thead><tr><th></th><th>Text</th>
<th>Status</th>
<th class="num">Impressions</th><th class="num">Clicks</th>
<th class="num" title="Click-through rate, 95 % interval in brackets">CTR (95 % interval)</th>
<th class="num">Conversions</th>
<th class="num" title="Conversions per impression, 95 % interval">Conversion rate (95 %)</th>
<th class="num" title="Chance that this variant is the best of those serving">
Probability best</th>
<th class="num" title="Expected {escape(objective.upper())} lost per impression by serving this
variant instead of the best one (percentage points)">Expected loss</th>
<th class="num" title="Share of traffic the chooser gives it now">Traffic now</th>
<th>Written by</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>
<p class="muted small">Intervals are 95 % credible intervals. Probability best and expected
loss compare the variants that serve now.</p></section>"""


def _swatch(index: int) -> str:
    # an SVG attribute, not an inline style: the page's CSP allows no inline styles
    return (
        f'<svg class="swatch" width="11" height="11" aria-hidden="true">'
        f'<rect width="11" height="11" rx="2" fill="{colour(index)}"/></svg>'
    )


def _rate(counts: Mapping[str, Any], rate: str, successes: str) -> str:
    """A rate with its interval; "no data yet" before the first impression, and an upper
    bound instead of the prior's mean while nothing has happened."""
    if not counts.get("impressions"):
        return '<span class="muted">no data yet</span>'
    if not counts.get(successes):
        return f"none yet (under {percent(counts[rate][2])})"
    return rate_with_interval(*counts[rate])


def _action(campaign_id: str, variant: Mapping[str, Any], verb: str) -> str:
    return f"/ui/campaigns/{quote(campaign_id)}/variants/{quote(variant['variant_id'])}/{verb}"


def _figures(page: Mapping[str, Any]) -> str:
    variants = page["variants"]
    ctr = interval_chart(
        [(v["label"], *v["ctr"], None) for v in variants if v["impressions"]],
        title="Click-through rate of each variant, with 95 % intervals",
    )
    series = page["series"]
    ids = [v["variant_id"] for v in variants]
    shares = share_chart(
        series["starts"],
        [(page["labels"][v], series["impressions"].get(v, [])) for v in ids],
        title="Share of impressions per variant over time",
        span_seconds=series["span_seconds"],
    )
    campaign_id = page["view"]["campaign_id"]
    return f"""<section class="card figures"><figure><figcaption>Click-through rate of each
variant: estimate and 95 % interval</figcaption>{ctr}</figure>
<figure><figcaption>Share of impressions per variant over time (UTC); the chooser moves
traffic to the leaders as evidence grows {_csv_link(campaign_id, "traffic")}</figcaption>
{shares}</figure></section>"""


def _queue(page: Mapping[str, Any]) -> str:
    campaign_id = page["view"]["campaign_id"]
    pending = page["pending"]
    if not pending:
        rows = '<p class="muted">Nothing awaits review.</p>'
    else:
        items = []
        for v in pending:
            buttons = "".join(
                f'<form method="post" class="inline" action="{_action(campaign_id, v, verb)}" '
                f'hx-post="{_action(campaign_id, v, verb)}" hx-target="#live" '
                f'hx-swap="outerHTML"><button type="submit" class="small {style}" '
                f'data-testid="{verb}-{escape(v["label"])}">{label}</button></form>'
                for verb, label, style in (("approve", "Approve", ""),
                                           ("reject", "Reject", "secondary"))
            )  # fmt: skip
            items.append(
                f'<li data-variant="{escape(v["variant_id"])}"><b>{escape(v["label"])}</b> '
                f'<span class="text">{escape(v.get("text") or "")}</span> '
                f'<span class="muted small">{escape(v.get("generator") or "")}</span>'
                f'<span class="actions">{buttons}</span></li>'
            )
        rows = f'<ul class="queue">{"".join(items)}</ul>'
    return f"""<section class="card" id="queue"><div class="title-row"><h2>Review queue
<span class="badge">{len(pending)}</span></h2>{_csv_link(campaign_id, "queue")}</div>
{rows}<p class="muted small">Approved copy serves from the next decision on; rejected copy
never serves.</p></section>"""


def _quality(page: Mapping[str, Any]) -> str:
    items = "".join(
        f'<li class="finding {f.level}"><b>{escape(f.title)}</b> {escape(f.detail)}'
        + (f'<div class="todo">What to do: {escape(f.action)}</div>' if f.action else "")
        + "</li>"
        for f in page["findings"]
    )
    return f"""<section class="card"><div class="title-row"><h2>Data quality</h2>
{_csv_link(page["view"]["campaign_id"], "quality")}</div><ul class="findings">{items}</ul>
</section>"""


def _segments(page: Mapping[str, Any]) -> str:
    segments = page["segments"]
    if not segments:
        return ""
    variants = page["variants"]
    head = "".join(f"<th class=num>{escape(v['label'])}</th>" for v in variants)
    rows = "".join(
        f"<tr><td>{escape(s['segment'])}</td><td class=num>{_count(s['impressions'])}</td>"
        + "".join(
            f"<td class=num>{_rate(s['variants'][v['variant_id']], 'ctr', 'clicks')}</td>"
            for v in variants
        )
        + "</tr>"
        for s in segments
    )
    return f"""<section class="card"><div class="title-row"><h2>By segment</h2>
{_csv_link(page["view"]["campaign_id"], "segments")}</div><table class="grid">
<thead><tr><th>Segment</th><th class=num>Impressions</th>{head}</tr></thead>
<tbody>{rows}</tbody></table><p class="muted small">CTR of each variant in each segment,
95 % intervals in brackets (busiest segments first).</p></section>"""


def insights_table(rows: Sequence[Mapping[str, Any]], attributes: str = "") -> str:
    """Creative insights as an HTML table (the dashboard's and the static report's)."""

    def cells(tag: str, texts: Sequence[str]) -> str:
        return "".join(
            f"<{tag}{' class=num' if 0 < i < 5 else ''}>{escape(t)}</{tag}>"
            for i, t in enumerate(texts)
        )

    body = "".join(
        f'<tr class="{escape(r["reading"])}">{cells("td", insight_cells(r))}</tr>' for r in rows
    )
    return (
        f"<table {attributes}><thead><tr>{cells('th', INSIGHT_HEADER)}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _insights(page: Mapping[str, Any]) -> str:
    rows = page.get("insights") or []
    if not rows:
        body = (
            '<p class="muted">Which elements of the copy (words, numbers, questions, length, '
            "offer, call to action) go with a higher CTR will show here once at least four "
            "variants have impressions and some of them differ in an element.</p>"
        )
    else:
        body = f"""<div class="scroll">{insights_table(rows, "class=grid id=insights-table")}
</div><p class="muted small">CTR pooled over the variants that have the element and over those
that do not; 95 % intervals resample the variants, so few variants give wide intervals. These go
together in this campaign; they are not proven causes.</p>"""
    return f"""<section class="card" id="insights"><div class="title-row"><h2>Creative insights
</h2>{_csv_link(page["view"]["campaign_id"], "insights")}</div>{body}</section>"""


def _models(page: Mapping[str, Any]) -> str:
    models = page["models"]
    if not models["versions"] and not models["rounds"]:
        return (
            '<section class="card"><h2>Retraining</h2><p class="muted">No retraining round '
            "has run yet: the generators write with the base model.</p></section>"
        )
    versions = "".join(
        f"<tr><td>{escape(m['version'])}</td><td>{_when(m['created_at'])}</td>"
        f"<td><span class='status {escape(m['verdict'])}'>{escape(m['verdict'])}</span></td>"
        f"<td>{escape(m['why'])}</td><td class=num>{m['variants_here']}</td></tr>"
        for m in models["versions"]
    )
    rounds = "".join(
        f"<tr><td>{_when(r['started_at'])}</td><td>{escape(r['outcome'])}</td>"
        f"<td>{escape(r['version'] or '–')}</td><td>{escape(_short(r['why'], 200))}</td></tr>"
        for r in models["rounds"]
    )
    rounds_table = (
        f"<h3>Rounds</h3><table class='grid'><thead><tr><th>Started</th><th>Outcome</th>"
        f"<th>Version</th><th>Why</th></tr></thead><tbody>{rounds}</tbody></table>"
        if rounds
        else ""
    )
    return f"""<section class="card"><div class="title-row"><h2>Retraining and model
versions</h2>{_csv_link(page["view"]["campaign_id"], "models")}</div>
<table class="grid"><thead><tr><th>Version</th><th>Trained</th><th>State</th><th>Why</th>
<th class=num>Variants here</th></tr></thead><tbody>{versions}</tbody></table>
{rounds_table}<p class="muted small">Model versions serve the whole deployment; a round
is promoted only when the new model passes the quality gate.</p></section>"""


#: The live sections of the campaign page, in order; each takes the page data.
_SECTIONS: tuple[Callable[[Mapping[str, Any]], str], ...] = (
    _summary, _variants, _figures, _queue, _quality, _segments, _insights, _models,
)  # fmt: skip


def live_campaign(page: Mapping[str, Any], *, message: str | None = None) -> str:
    """The part of a campaign's page that polls its fragment and is swapped in whole."""
    campaign_id = page["view"]["campaign_id"]
    note = f'<p class="flash" role="status">{escape(message)}</p>' if message else ""
    return (
        f'<div id="live" hx-get="/ui/campaigns/{quote(campaign_id)}/live" '
        f'hx-trigger="every {POLL_SECONDS}s" hx-swap="outerHTML">{note}'
        + "".join(section(page) for section in _SECTIONS)
        + f'<p class="muted small updated">Updated {_when(page["now"])}</p></div>'
    )


def campaign_page(page: Mapping[str, Any], tenant: str, *, message: str | None = None) -> str:
    """One campaign: live figures and tables, and the form to add variants."""
    view = page["view"]
    campaign_id = view["campaign_id"]
    title = view.get("name") or campaign_id
    add = f"""<section class="card"><h2>Add variants</h2>
<form method="post" action="/ui/campaigns/{quote(campaign_id)}/variants" class="add">
<label for="texts">Your copy, one variant per line (they serve at once)</label>
<textarea id="texts" name="texts" rows="3"></textarea>
<label for="n">or have the generators write this many (they wait for review)</label>
<input id="n" name="n" type="number" min="1" max="20">
<button type="submit">Add</button></form></section>"""
    return layout(
        title,
        f"""<p class="crumbs"><a href="/ui">Campaigns</a> ›</p>
<div class="title-row"><h1>{escape(title)}</h1><span class="muted">{escape(campaign_id)} ·
objective {escape((view.get("objective") or "ctr").upper())}</span></div>
{live_campaign(page, message=message)}{add}""",
        tenant=tenant,
    )
