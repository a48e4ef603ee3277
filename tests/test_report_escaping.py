"""Ids from the data are shown literally in report pages and figures: never markup, Markdown,
a link or math (capforecast.escape, used by every headline, table and figure of the reports).

Markdown is rendered by nbconvert's own renderer (what the report HTML export runs), tables by
pandas' Styler, figures by matplotlib's Agg backend: the real parts, no stand-ins.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import matplotlib.cbook
import pandas as pd
import pytest
from hostile_payloads import (
    BIDI_CONTROLS,
    BIDI_PAYLOADS,
    DISPLAY_PAYLOADS,
    HTML_PAYLOADS,
    MARKDOWN_PAYLOADS,
    TEX_PAYLOADS,
    as_shown,
    live_injections,
    shown_text,
    table_cells,
)
from matplotlib.figure import Figure
from matplotlib.text import Text
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from test_decision import decision_inputs
from test_reports import (
    FORECAST_START,
    make_clean,
    make_daily_breach,
    make_forecasts,
    make_quality,
    make_risk,
)

from capforecast.contracts import series_id
from capforecast.decision import tables as decision_report
from capforecast.escape import html_text, markdown_text, plot_text
from capforecast.reports import capacity_risk, common, data_quality, exploration, forecast_backtest

# --------------------------------------------------------------------------------------------
# The escaping functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", (*DISPLAY_PAYLOADS, " padded ", "\u2003x\u00a0", "日本 ñ"))
def test_markdown_text_renders_as_the_literal_value(payload: str) -> None:
    html = markdown2html_mistune(
        f"First **{markdown_text(payload)}** then {markdown_text(payload)}."
    )
    assert live_injections(html) == []
    # Only the template's own paragraph and emphasis: no link, image, code, heading, list, table.
    tags = [t for t in ("<a ", "<img", "<code", "<h1", "<li", "<td", "<em", "<del") if t in html]
    assert tags == []
    assert html.count("<strong>") == 1
    assert shown_text(html) == as_shown(f"First {payload} then {payload}.")


@pytest.mark.parametrize("payload", (*HTML_PAYLOADS, "a & b", "'single' \"double\""))
def test_html_text_shows_markup_as_characters(payload: str) -> None:
    html = f"<p>{html_text(payload)}</p>"
    assert live_injections(html) == []
    assert shown_text(html) == as_shown(payload)
    assert html_text(payload).count("<") == 0 and html_text(payload).count('"') == 0


@pytest.mark.parametrize("payload", BIDI_PAYLOADS)
def test_bidi_controls_show_as_visible_marks_everywhere(payload: str) -> None:
    marks = [f"<U+{ord(c):04X}>" for c in payload if c in BIDI_CONTROLS]
    assert marks  # every payload holds at least one
    for escaped in (html_text(payload), markdown_text(payload), plot_text(payload)):
        assert not BIDI_CONTROLS.intersection(escaped)
    assert shown_text(f"<p>{html_text(payload)}</p>") == as_shown(payload)
    drawn = plot_text(payload)
    assert [m for m in marks if m in drawn] == marks


@pytest.mark.parametrize("payload", (*TEX_PAYLOADS, "50$ and 60$", "a\\$b", "no dollar"))
def test_plot_text_is_drawn_literally_not_as_mathtext(payload: str) -> None:
    fig = Figure()
    ax = fig.add_subplot()
    ax.set_title(plot_text(payload))
    fig.savefig(io.BytesIO(), format="png")  # mathtext would raise on $\foo$ and $$ here
    # What matplotlib draws and whether it typesets it (its own decision function).
    drawn, as_math = ax.title._preprocess_math(ax.title.get_text())
    assert (drawn, as_math) == (payload, False)


def test_unescaped_tex_is_what_breaks_the_figures() -> None:
    """The failure the escaping prevents, shown on the same matplotlib: a raw id crashes or is
    typeset."""
    assert matplotlib.cbook.is_math_text("a$b$c")
    fig = Figure()
    fig.add_subplot().set_title("$\\foo$")
    with pytest.raises(ValueError, match="foo"):
        fig.savefig(io.BytesIO(), format="png")


# --------------------------------------------------------------------------------------------
# Headlines, tables and the decision section of the reports
# --------------------------------------------------------------------------------------------


def _renamed(frame: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    out = frame.copy()
    out["resource_id"] = out["resource_id"].replace(old, new)
    if "series_id" in out:
        out["series_id"] = [
            series_id(r, m) for r, m in zip(out["resource_id"], out["metric"], strict=True)
        ]
    return out


@pytest.mark.parametrize("payload", HTML_PAYLOADS + MARKDOWN_PAYLOADS + TEX_PAYLOADS[:2])
def test_risk_headline_names_a_hostile_first_action_literally(payload: str) -> None:
    risk = make_risk()
    first = capacity_risk.first_action(risk)["resource_id"]
    risk = _renamed(risk, first, payload).assign(service=payload)
    html = markdown2html_mistune(capacity_risk.risk_headline(risk))
    assert live_injections(html) == []
    assert f"First action by {common.format_timestamp(risk['act_by'].min())}" in shown_text(html)
    assert f"{as_shown(payload)} memory_utilization" in shown_text(html)
    assert f"service {as_shown(payload)}" in shown_text(html)


@pytest.mark.parametrize("payload", HTML_PAYLOADS + MARKDOWN_PAYLOADS[:2])
def test_quality_and_backtest_headlines_escape_flags_and_model_names(payload: str) -> None:
    quality = make_quality(make_clean()).assign(flags=payload)
    html = markdown2html_mistune(data_quality.quality_headline(quality))
    assert live_injections(html) == []
    assert f"most common: {as_shown(payload)} ({len(quality)})" in shown_text(html)
    board = pd.DataFrame({"model": [payload, "selected"], "wql_relgm": [0.8, 0.7]})
    forecasts = make_forecasts(make_clean()).assign(model_used=payload)
    html = markdown2html_mistune(forecast_backtest.backtest_headline(board, forecasts))
    assert live_injections(html) == []
    assert f"Best single model by WQL relgm: {as_shown(payload)} (WQL" in shown_text(html)


def test_styled_tables_escape_every_text_cell_and_column_name() -> None:
    payloads = list(DISPLAY_PAYLOADS)
    table = pd.DataFrame(
        {
            "resource_id": payloads,
            "service": pd.Categorical(payloads[::-1]),
            HTML_PAYLOADS[0]: range(len(payloads)),
            "flags": [[p] for p in payloads],  # non-string objects are escaped too
            "score": 1.5,
        }
    )
    html = common.styled(table).to_html()
    assert live_injections(html) == []
    text = shown_text(html)
    for payload in payloads:
        assert as_shown(payload) in text
        assert as_shown(str([payload])) in text
    assert as_shown(HTML_PAYLOADS[0]) in text  # the column name
    assert "1.50" in text  # numbers still formatted


def test_decision_section_tables_show_hostile_ids_literally(tmp_path) -> None:
    ids = [HTML_PAYLOADS[0], MARKDOWN_PAYLOADS[0], MARKDOWN_PAYLOADS[4], TEX_PAYLOADS[0]]
    summary = {
        "history_end": "2026-01-10T00:00:00+00:00",
        "actuals_end": "2026-01-17T00:00:00+00:00",
        "horizon_bins": 168,
        "statistic": "mean",
        "series": {"scored": len(ids)},
        "methods": [],
        "rightsizing": dict.fromkeys(
            ("changed", "downsize", "checked", "harmful", "harmful_downsize", "over_critical"), 0
        )
        | {"not_checked": 0},
    }
    (tmp_path / "summary.json").write_text(pd.Series(summary).to_json())
    pd.DataFrame(
        {
            "resource_id": ids,
            "instance_type": "m5.large",
            "recommended_instance_type": "m5.xlarge",
            "cpu_peak_on_recommended": 120.0,
            "memory_peak_on_recommended": 50.0,
            "harmful": True,
        }
    ).to_csv(tmp_path / "rightsizing_check.csv", index=False)
    pd.DataFrame(
        {
            "resource_id": ids,
            "metric": "cpu_utilization",
            "first_crossing": "2026-01-12T05:00:00Z",
            "metric_finding": "optimized",
            "p_breach_critical": 0.1,
            "scored": True,
            "breached": True,
            "call_at_risk": False,
        }
    ).to_csv(tmp_path / "series_scores.csv", index=False)
    html = markdown2html_mistune(decision_report.report_section(decision_inputs(tmp_path)))
    assert live_injections(html) == []
    _methods, harmful, missed = table_cells(html)
    for table in (harmful, missed):
        header, *rows = table
        assert header[0] == "resource_id"
        # One cell per id, in a row as long as the header: "|" in an id did not split it.
        assert [row[0] for row in rows] == [as_shown(i) for i in ids]
        assert {len(row) for row in rows} == {len(header)}


# --------------------------------------------------------------------------------------------
# Figures show ids literally (and draw at all)
# --------------------------------------------------------------------------------------------


def _texts(fig: Figure) -> list[Text]:
    # Ticks exist once drawn, and mathtext errors raise here; the resolution does not matter.
    fig.savefig(io.BytesIO(), format="png", dpi=10)
    return [t for t in fig.findobj(Text) if t.get_text()]


def _drawn(fig: Figure) -> list[str]:
    out = []
    for text in _texts(fig):
        drawn, as_math = text._preprocess_math(text.get_text())
        assert not as_math, text.get_text()
        out.append(drawn)
    return out


RESOURCES = ("i-web-1", "i-web-2", "i-db-1")


def _with_ids(frame: pd.DataFrame, ids: tuple[str, ...]) -> pd.DataFrame:
    out = frame
    for old, new in zip(RESOURCES, ids, strict=True):
        out = _renamed(out, old, new)
    return out


@pytest.mark.parametrize(
    "ids", [TEX_PAYLOADS[:3], TEX_PAYLOADS[3:6], (TEX_PAYLOADS[6], HTML_PAYLOADS[0], "$x")]
)
def test_report_figures_draw_hostile_ids_literally(ids: tuple[str, ...]) -> None:
    clean = _with_ids(make_clean(), ids)
    forecasts = _with_ids(make_forecasts(make_clean()), ids)
    risk = _with_ids(make_risk(), ids)
    sids = [series_id(i, "cpu_utilization") for i in ids]
    quality = _with_ids(make_quality(make_clean()), ids).assign(longest_gap_bins=5)
    figures = {
        "clean": exploration.clean_series_figure(clean, sids),
        "fan": common.fan_chart_figure(clean, forecasts, sids),
        "risk fans": capacity_risk.risk_fan_charts(risk, clean, forecasts, 6),
        "heatmap": capacity_risk.breach_heatmap(
            capacity_risk.breach_matrix(make_daily_breach(risk))
        ),
        "gaps": data_quality.gaps_figure(quality),
        "quarantine": data_quality.quarantine_reasons_figure(pd.DataFrame({"reason": list(ids)})),
        "values": data_quality.value_distribution_figure(
            clean.assign(metric=clean["resource_id"].map(dict(zip(ids, ids[::-1], strict=True))))
        ),
    }
    for name, fig in figures.items():
        drawn = " ".join(_drawn(fig))
        missing = [i for i in ids if i not in drawn]
        # The third resource (i-db-1) is over-provisioned: no risk to chart.
        assert missing == ([ids[2]] if name == "risk fans" else []), (name, drawn)


def test_metric_legends_keep_names_that_matplotlib_would_hide() -> None:
    raw = pd.DataFrame(
        {
            "timestamp": pd.date_range(FORECAST_START, periods=4, freq="30min"),
            "resource_id": "r",
            "metric": ["_hidden", "$\\foo$", "_hidden", "$\\foo$"],
            "value": 1.0,
        }
    )
    fig = exploration.samples_per_hour_figure(raw)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [plot_text("$\\foo$"), "_hidden"]
    assert set(_drawn(fig)) >= {"$\\foo$", "_hidden"}


def test_figures_stay_text_under_a_matplotlibrc_that_asks_for_tex(tmp_path) -> None:
    """A user's matplotlibrc with ``text.usetex: True`` would send ids (and every label) to
    LaTeX, which is not even installed here; the report modules keep figures as text."""
    (tmp_path / "matplotlibrc").write_text("text.usetex: True\n")
    script = (
        "import io\n"
        "import pandas as pd\n"
        "from capforecast.reports import capacity_risk\n"
        "day = pd.Timestamp('2026-09-01')\n"
        "matrix = pd.DataFrame({day: [0.5, 0.9]}, index=['$\\\\foo$', 'a$b'])\n"
        "capacity_risk.breach_heatmap(matrix).savefig(io.BytesIO(), format='png', dpi=10)\n"
        "print('drawn')\n"
    )
    env = {**os.environ, "MATPLOTLIBRC": str(tmp_path), "MPLBACKEND": "Agg"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0 and run.stdout.strip() == "drawn", run.stderr[-1500:]
