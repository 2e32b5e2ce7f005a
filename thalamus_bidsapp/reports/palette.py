"""One colour per segmentation method and one figure style, for every figure of the reports.

Colours come from the Okabe-Ito palette (Okabe and Ito 2008), which stays
distinguishable with the common colour-vision deficiencies; the known
methods have fixed colours, so a method looks the same in every figure and
every report. Methods beyond the eight Okabe-Ito colours take Paul Tol's
"muted" colours, also colour-blind safe.

:data:`STYLE` is the matplotlib style of the figures: fonts readable at print
width (figures are drawn at their print size, at most :data:`PRINT_WIDTH_IN`
wide, and no text is smaller than :data:`MIN_FONT_PT`).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Okabe-Ito colours by name (black is kept for the manual reference).
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Paul Tol's muted palette, for methods beyond the Okabe-Ito colours.
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")

#: The colour of the manual (ground-truth) masks and of reference lines.
REFERENCE_COLOR = OKABE_ITO["black"]

def _registry_colors() -> dict[str, str]:
    """Each registered method's mask colours (its ``colors``), in report order."""
    from thalamus_bidsapp.methods.registry import all_methods

    colors: dict[str, str] = {}
    for method in all_methods():
        for desc, color in method.colors.items():
            if desc in colors:
                raise ValueError(f"method {method.name!r} gives mask {desc!r} a colour another method gave already")
            colors[desc] = color
    return colors


#: Known masks (the ``desc`` of the methods' masks) in report order, with their colours.
METHOD_COLORS: dict[str, str] = _registry_colors()
_SPARE = (*TOL_MUTED[1:3], TOL_MUTED[4], TOL_MUTED[5], TOL_MUTED[8], "#777777")

#: Widest figure: a two-column figure of a journal page, in inches (180 mm).
PRINT_WIDTH_IN = 7.0
#: Smallest font in any figure, in points at the saved size.
MIN_FONT_PT = 8.0
#: Resolution of the PNG files (print quality).
PNG_DPI = 300

#: matplotlib rcParams of every group figure.
STYLE: dict[str, object] = {
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "legend.title_fontsize": 8.0,
    "figure.titlesize": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    # Reproducible SVG ids: redrawing the same data gives the same file.
    "svg.hashsalt": "thalamus_bidsapp",
    "svg.fonttype": "path",
}


def method_order(methods: Iterable[str]) -> list[str]:
    """``methods`` without repeats: the known ones in report order, then the others alphabetically."""
    known = list(METHOD_COLORS)
    unique = set(str(m) for m in methods)
    return [m for m in known if m in unique] + sorted(unique - set(known))


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """Colour of each method: the fixed colour of a known method, a spare one for the others.

    Spare colours go to unknown methods in alphabetical order, so the same
    set of methods always gets the same colours.
    """
    colors = {}
    spare = iter(_SPARE)
    for method in method_order(methods):
        if method in METHOD_COLORS:
            colors[method] = METHOD_COLORS[method]
        else:
            colors[method] = next(spare, "#777777")
    return colors



def relative_luminance(color: str | tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour (hex or 0..1 RGB)."""
    from matplotlib.colors import to_rgb

    channels = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def contrast_ratio(first: str | tuple[float, float, float], second: str | tuple[float, float, float]) -> float:
    """WCAG contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    a, b = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (a + 0.05) / (b + 0.05)
