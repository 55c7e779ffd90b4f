"""The architecture as a drawing (the paper's Figure 2), made from a model's own summary.

A box per leaf layer, top to bottom, with its output shape (as the paper writes it, H×W×C), its
parameters and multiply-accumulates (``models.summary``'s counts). In a two-tower net (any layer
with ``groups == 2``, §3.2) every layer up to the classifier's last is drawn as two boxes side by
side, each with its tower's half of the maps, as Figure 2 draws the two GPUs: the first layer reads
the one image, a grouped layer (conv2, conv4, conv5 and their LRNs) reads only its own tower, and a
layer with weights and ``groups == 1`` after the towers have formed (conv3, fc6, fc7) reads both
towers' maps: the crossing lines, Figure 2's exchange between the GPUs. The last layer is one box.

The SVG is self-contained (no script, no external font or style). Each layer is a ``<g>`` whose
``data-name``, ``data-shape``, ``data-towers`` and ``data-exchange`` attributes say what it draws,
so a test can read the drawing back.
"""

from __future__ import annotations

from html import escape

from alexnet.models.summary import LayerRow, Summary, format_shape

ROW, GAP, LEFT, COLUMN, TEXT_X = 34, 10, 20, 300, 340  # px: row height, gap between rows, margin, boxes' width, counts' x
TOWER_FILL, ONE_FILL, EXCHANGE = ("#dbe9f6", "#f6e3d4"), "#e4e4e4", "#c0392b"


def tower_layout(summary: Summary) -> list[tuple[int, bool]]:
    """Per layer: (towers drawn, 1 or 2; whether it reads both towers' maps)."""
    rows = summary.layers
    if not any(r.groups == 2 for r in rows):
        return [(1, False)] * len(rows)
    last = max(i for i, r in enumerate(rows) if r.params)  # the classifier's last layer: one box
    layout, formed = [], False
    for i, r in enumerate(rows):
        if i >= last:
            layout.append((1, formed and r.params > 0))
            formed = False
            continue
        exchange = formed and r.params > 0 and r.groups == 1
        layout.append((2, exchange))
        formed = formed or r.params > 0
    return layout


def _half(shape: tuple[int, ...]) -> str:
    """One tower's share of ``shape``: half the channels (or half the units)."""
    return format_shape((shape[0] // 2, *shape[1:]))


def _layer(y: int, row: LayerRow, towers: int, exchange: bool) -> str:
    shape = format_shape(row.output_shape)
    parts = [f'<g class="layer" data-name="{escape(row.name)}" data-shape="{shape}" data-towers="{towers}" '
             f'data-exchange="{int(exchange)}">']
    if towers == 2:
        width = (COLUMN - GAP) // 2
        for t in range(2):
            x = LEFT + t * (width + GAP)
            parts.append(f'<rect x="{x}" y="{y}" width="{width}" height="{ROW}" rx="4" fill="{TOWER_FILL[t]}" stroke="#555"/>')
            parts.append(f'<text x="{x + width / 2}" y="{y + 14}" text-anchor="middle">{escape(row.name)}</text>')
            parts.append(f'<text x="{x + width / 2}" y="{y + 28}" text-anchor="middle" class="shape">{_half(row.output_shape)}</text>')
    else:
        parts.append(f'<rect x="{LEFT}" y="{y}" width="{COLUMN}" height="{ROW}" rx="4" fill="{ONE_FILL}" stroke="#555"/>')
        parts.append(f'<text x="{LEFT + COLUMN / 2}" y="{y + 14}" text-anchor="middle">{escape(row.name)}</text>')
        parts.append(f'<text x="{LEFT + COLUMN / 2}" y="{y + 28}" text-anchor="middle" class="shape">{shape}</text>')
    if exchange:  # lines from both towers above into both boxes (or the one box) of this layer
        top, ends = y - GAP, ([0.25, 0.75] if towers == 2 else [0.5])
        for start in (0.25, 0.75):
            for end in ends:
                parts.append(f'<line x1="{LEFT + start * COLUMN}" y1="{top}" x2="{LEFT + end * COLUMN}" y2="{y}" '
                             f'stroke="{EXCHANGE}" stroke-width="1.5"/>')
    counts = f"{row.params:,} params" + (f" · {row.macs:,} MACs" if row.macs else "")
    parts.append(f'<text x="{TEXT_X}" y="{y + 21}" class="counts">{counts if row.params or row.macs else ""}</text>')
    return "".join(parts) + "</g>"


def architecture_svg(summary: Summary) -> str:
    """The drawing of ``summary`` (see the module doc) as an SVG document."""
    layout = tower_layout(summary)
    top = 60
    body = [_layer(top + i * (ROW + GAP), row, towers, exchange)
            for i, (row, (towers, exchange)) in enumerate(zip(summary.layers, layout, strict=True))]
    height = top + len(summary.layers) * (ROW + GAP) + 30
    towered = any(t == 2 for t, _ in layout)
    title = (f"{summary.model}: input {summary.in_channels}×{summary.input_size}×{summary.input_size}, "
             f"{summary.total_params:,} parameters, {summary.total_macs / 1e9:.3f} G MACs")
    legend = "two towers (Fig. 2's two GPUs); red lines: a layer that reads both towers' maps" if towered else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{TEXT_X + 380}" height="{height}" '
            f'viewBox="0 0 {TEXT_X + 380} {height}" font-family="sans-serif" font-size="12">'
            '<style>.shape{font-size:11px;fill:#333}.counts{font-size:11px;fill:#555}</style>'
            f'<text x="{LEFT}" y="24" font-size="14" font-weight="bold">{escape(title)}</text>'
            f'<text x="{LEFT}" y="44" class="counts">{legend}</text>'
            + "".join(body) + "</svg>\n")
