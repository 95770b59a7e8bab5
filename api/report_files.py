"""Report rows (analytics/reports.py) as files people open: CSV, an XLSX workbook and the
school board's PDF. Danish headings by default, English with lang=en.

Room, site and bin names are typed by staff: a spreadsheet would run a cell starting with
= + - @ as a formula (OWASP "CSV injection"), so such text gets a leading apostrophe in
CSV and is stored as a plain string cell in XLSX.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

Lang = Literal["da", "en"]

MONTHS_DA = (
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
)

# column key -> (Danish, English) heading; the order is the files' column order.
ROOM_COLUMNS = {
    "month": ("Måned", "Month"),
    "site": ("Skole", "School"),
    "room": ("Lokale", "Room"),
    "sensor_id": ("Sensor-id", "Sensor id"),
    "occupied_h": ("Timer i brug", "Occupied hours"),
    "br18_hours_above_1000_ppm": (
        "Timer over 1000 ppm CO2 (BR18)",
        "Hours above 1000 ppm CO2 (BR18)",
    ),
    "co2_category_I_share": ("CO2 kategori I (andel)", "CO2 category I (share)"),
    "co2_category_II_share": ("CO2 kategori II (andel)", "CO2 category II (share)"),
    "co2_category_III_share": ("CO2 kategori III (andel)", "CO2 category III (share)"),
    "co2_category_IV_share": ("CO2 kategori IV (andel)", "CO2 category IV (share)"),
    "temperature_category_I_share": (
        "Temperatur kategori I (andel)",
        "Temperature category I (share)",
    ),
    "temperature_category_II_share": (
        "Temperatur kategori II (andel)",
        "Temperature category II (share)",
    ),
    "temperature_category_III_share": (
        "Temperatur kategori III (andel)",
        "Temperature category III (share)",
    ),
    "temperature_category_IV_share": (
        "Temperatur kategori IV (andel)",
        "Temperature category IV (share)",
    ),
}
SCHOOL_COLUMNS = {
    "site": ("Skole", "School"),
    "rooms": ("Lokaler", "Rooms"),
    "occupied_h": ("Timer i brug", "Occupied hours"),
    "br18_hours_above_1000_ppm": (
        "Timer over 1000 ppm CO2 (BR18)",
        "Hours above 1000 ppm CO2 (BR18)",
    ),
    "rooms_with_br18_hours": ("Lokaler med timer over 1000 ppm", "Rooms with hours above 1000 ppm"),
    "worst_room": ("Dårligste lokale", "Worst room"),
    "worst_room_br18_hours": (
        "Dårligste lokale, timer over 1000 ppm",
        "Worst room, hours above 1000 ppm",
    ),
    "co2_category_I_II_share": ("CO2 kategori I-II (andel)", "CO2 category I-II (share)"),
    "temperature_category_I_II_share": (
        "Temperatur kategori I-II (andel)",
        "Temperature category I-II (share)",
    ),
}
BIN_COLUMNS = {
    "month": ("Måned", "Month"),
    "bin": ("Beholder", "Bin"),
    "sensor_id": ("Sensor-id", "Sensor id"),
    "readings": ("Målinger", "Readings"),
    "emptyings": ("Tømninger", "Emptyings"),
    "mean_fill_at_emptying_pct": ("Gns. fyldning ved tømning (%)", "Mean fill at emptying (%)"),
    "current_fill_pct": ("Fyldning nu (%)", "Current fill (%)"),
    "fill_rate_pct_per_h": ("Fyldningshastighed (%/t)", "Fill rate (%/h)"),
    "time_to_full_h": ("Timer til fuld", "Hours to full"),
}
EMPTYING_COLUMNS = {
    "bin": ("Beholder", "Bin"),
    "time": ("Tidspunkt (UTC)", "Time (UTC)"),
    "fill_before_pct": ("Fyldning før (%)", "Fill before (%)"),
    "fill_after_pct": ("Fyldning efter (%)", "Fill after (%)"),
}
WEEKDAYS = {
    "da": ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"),
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}
PARKING_HEAD = {"zone": ("Zone", "Zone"), "weekday": ("Ugedag", "Weekday")}
SHEETS = {
    "rooms": ("Lokaler", "Rooms"),
    "schools": ("Skoler", "Schools"),
    "bins": ("Beholdere", "Bins"),
    "emptyings": ("Tømninger", "Emptyings"),
    "parking": ("Parkering", "Parking"),
}


def _pick(pair: tuple[str, str], lang: Lang) -> str:
    return pair[0] if lang == "da" else pair[1]


def _safe_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def parking_rows(zones: list[dict[str, Any]], lang: Lang) -> tuple[list[str], list[list]]:
    """One row per zone and weekday with 24 hourly mean occupancy rates."""
    header = [_pick(PARKING_HEAD["zone"], lang), _pick(PARKING_HEAD["weekday"], lang)]
    header += [f"{h:02d}" for h in range(24)]
    rows = [
        [z["zone"], WEEKDAYS[lang][d], *z["weekday_hour_rate"][d]] for z in zones for d in range(7)
    ]
    return header, rows


def table(rows: list[dict[str, Any]], columns: dict[str, tuple[str, str]], lang: Lang):
    header = [_pick(label, lang) for label in columns.values()]
    return header, [[row.get(key) for key in columns] for row in rows]


def to_csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else _safe_text(v) for v in row])
    return out.getvalue()


def emptying_rows(bin_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"bin": b["bin"], **e} for b in bin_rows for e in b["emptying_history"]]


def to_xlsx(sheets: list[tuple[str, list[str], list[list]]]) -> bytes:
    """A workbook with one sheet per (title, header, rows); bold header, frozen first row,
    text that looks like a formula stored as text."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, header, rows in sheets:
        sheet = workbook.create_sheet(title[:31])
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for r, row in enumerate(rows, start=2):
            for c, value in enumerate(row, start=1):
                cell = sheet.cell(row=r, column=c)
                cell.value = value
                if isinstance(value, str):
                    cell.data_type = "s"  # never a formula, whatever the name starts with
        sheet.freeze_panes = "A2"
        for c, label in enumerate(header, start=1):
            width = max([len(str(label))] + [len(str(row[c - 1] or "")) for row in rows[:200]])
            sheet.column_dimensions[sheet.cell(row=1, column=c).column_letter].width = min(
                max(width + 2, 8), 40
            )
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _da_number(x: float | None, digits: int = 1) -> str:
    """Danish number: decimal comma, dot between thousands."""
    if x is None:
        return "–"
    text = f"{x:,.{digits}f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def school_board_pdf(
    school: dict[str, Any],
    rooms: list[dict[str, Any]],
    month_year: tuple[int, int],
    municipality: str,
) -> bytes:
    """A two-part A4 report in Danish for a school board: key figures, hours above
    1.000 ppm per room, and the EN 16798-1 category shares per room, as charts."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    year, month = month_year
    period = f"{MONTHS_DA[month - 1]} {year}"
    names = [_short(str(r["room"])) for r in rooms]
    hours = [r["br18_hours_above_1000_ppm"] for r in rooms]
    out = io.BytesIO()
    with PdfPages(out, metadata={"Title": f"Indeklima {school['site']} {period}"}) as pdf:
        figure = Figure(figsize=(8.27, 11.69))  # A4 portrait, inches
        figure.text(0.08, 0.95, f"Indeklima på {school['site']}", fontsize=20, weight="bold")
        figure.text(0.08, 0.925, f"{period} · rapport til skolebestyrelsen · {municipality}")
        good = school["co2_category_I_II_share"]
        lines = [
            f"Lokaler med målinger: {school['rooms']}",
            f"Timer med elever i lokalerne (i alt): {_da_number(school['occupied_h'])}",
            "Timer over 1.000 ppm CO₂ i undervisningstiden (BR18 §447): "
            f"{_da_number(school['br18_hours_above_1000_ppm'])}",
            f"Lokaler med timer over 1.000 ppm: {school['rooms_with_br18_hours']}",
            f"Dårligste lokale: {school['worst_room']} "
            f"({_da_number(school['worst_room_br18_hours'])} timer)",
            "Andel af tiden i kategori I–II for CO₂ (DS/EN 16798-1): "
            + ("–" if good is None else f"{_da_number(100 * good, 0)} %"),
        ]
        for i, line in enumerate(lines):
            figure.text(0.08, 0.88 - i * 0.022, line, fontsize=11)
        chart = figure.add_axes((0.3, 0.42, 0.62, 0.28))
        positions = list(range(len(names)))
        chart.barh(positions, hours, color="#c62828")
        chart.set_yticks(positions, names)
        chart.invert_yaxis()
        chart.set_xlabel("timer over 1.000 ppm CO₂ i undervisningstiden")
        chart.set_title("Timer over BR18's grænse pr. lokale", loc="left")
        chart.xaxis.set_major_formatter(
            lambda x, _pos: _da_number(x, 0 if float(x).is_integer() else 1)
        )
        shares = figure.add_axes((0.3, 0.12, 0.62, 0.23))
        colours = ("#2e7d32", "#9ccc65", "#f9a825", "#c62828")
        left = [0.0] * len(rooms)
        for index, (key, colour) in enumerate(zip(("I", "II", "III", "IV"), colours, strict=True)):
            values = [100 * (r[f"co2_category_{key}_share"] or 0.0) for r in rooms]
            shares.barh(positions, values, left=left, color=colour, label=f"kategori {key}")
            left = [a + b for a, b in zip(left, values, strict=True)]
            del index
        shares.set_yticks(positions, names)
        shares.invert_yaxis()
        shares.set_xlim(0, 100)
        shares.set_xlabel("andel af undervisningstiden (%)")
        shares.set_title("CO₂-kategorier efter DS/EN 16798-1", loc="left")
        shares.legend(ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
        figure.text(
            0.08,
            0.015,
            "Undervisningstid: skolekalenderen eller lokalets tilstedeværelsessensor. "
            "Tider i dansk tid. Beregnet af kommune-iot.",
            fontsize=8,
            color="#555555",
        )
        pdf.savefig(figure)
    return out.getvalue()
