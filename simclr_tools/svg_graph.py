"""A small layered-DAG renderer to inline SVG, for the lineage graph of the HTML report.

Nodes go in layers by their longest path from a source (top to bottom), executions as boxes and
artifacts as rounded pills, edges as curved arrows. Pure functions, no graphviz: the report must
build wherever the pipeline runs.
"""
from __future__ import annotations

import html
from typing import Dict, List, Sequence, Tuple

KINDS = ('execution', 'artifact')
_CHAR_W = 7.0  # px per character at 12 px sans-serif, a conservative average
_LINE_H = 15
_PAD_X, _PAD_Y = 12, 8
_GAP_X, _GAP_Y = 24, 56
_MARGIN = 16
_STYLE = {
    'execution': {'fill': '#dbe9f8', 'stroke': '#3b6ea5', 'radius': 3},
    'artifact': {'fill': '#fdf3d3', 'stroke': '#a58a3b', 'radius': None},  # None: a pill
}

Node = Dict[str, str]
Edge = Tuple[str, str]


def _check(nodes: Sequence[Node], edges: Sequence[Edge]) -> None:
  ids = [n['id'] for n in nodes]
  if len(set(ids)) != len(ids):
    raise ValueError('node ids must be unique')
  for node in nodes:
    if node.get('kind') not in KINDS:
      raise ValueError(f"node {node['id']!r}: kind must be one of {KINDS}, "
                       f"got {node.get('kind')!r}")
  known = set(ids)
  for src, dst in edges:
    if src not in known or dst not in known:
      raise ValueError(f'edge ({src!r}, {dst!r}) names an unknown node')


def layers(nodes: Sequence[Node], edges: Sequence[Edge]) -> Dict[str, int]:
  """Layer of each node: 0 for sources, else 1 + the deepest predecessor (longest path)."""
  _check(nodes, edges)
  preds: Dict[str, set] = {n['id']: set() for n in nodes}
  succs: Dict[str, set] = {n['id']: set() for n in nodes}
  for src, dst in edges:
    preds[dst].add(src)
    succs[src].add(dst)
  waiting = {n: len(p) for n, p in preds.items()}
  ready = [n['id'] for n in nodes if not preds[n['id']]]
  layer = {n: 0 for n in ready}
  while ready:  # Kahn's topological order: a node's layer is final once all preds are placed
    current = ready.pop(0)
    for nxt in sorted(succs[current]):
      layer[nxt] = max(layer.get(nxt, 0), layer[current] + 1)
      waiting[nxt] -= 1
      if waiting[nxt] == 0:
        ready.append(nxt)
  if len(layer) != len(nodes) or any(waiting.values()):
    raise ValueError('the graph has a cycle; lineage graphs are acyclic')
  return layer


def _size(node: Node) -> Tuple[float, float]:
  lines = str(node.get('label', node['id'])).split('\n')
  width = max(len(line) for line in lines) * _CHAR_W + 2 * _PAD_X
  if node['kind'] == 'artifact':
    width += 12  # room for the pill's rounded ends
  return max(width, 80.0), len(lines) * _LINE_H + 2 * _PAD_Y


def _sort_row(row: List[str], preds: Dict[str, List[str]], x: Dict[str, float]) -> None:
  """Orders a row by the mean x of each node's predecessors (barycentre): fewer crossings."""
  rank = {n: i for i, n in enumerate(row)}
  mean_x = lambda n: sum(x[p] for p in preds[n]) / len(preds[n]) if preds[n] else float('inf')
  row.sort(key=lambda n: (mean_x(n), rank[n]))


def layout(nodes: Sequence[Node], edges: Sequence[Edge]):
  """(boxes {id: (cx, cy, w, h)}, canvas width, canvas height)."""
  layer = layers(nodes, edges)
  sizes = {n['id']: _size(n) for n in nodes}
  preds: Dict[str, List[str]] = {n['id']: [] for n in nodes}
  for src, dst in edges:
    preds[dst].append(src)
  rows: List[List[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
  for node in nodes:
    rows[layer[node['id']]].append(node['id'])
  row_width = lambda row: sum(sizes[n][0] for n in row) + _GAP_X * max(len(row) - 1, 0)
  width = max((row_width(r) for r in rows), default=0) + 2 * _MARGIN
  x: Dict[str, float] = {}

  def place(row):
    left = (width - row_width(row)) / 2
    for n in row:
      x[n] = left + sizes[n][0] / 2
      left += sizes[n][0] + _GAP_X

  for row in rows:  # rows above are placed, so their x can order this one
    _sort_row(row, preds, x)
    place(row)
  boxes, top = {}, _MARGIN
  for row in rows:
    height = max(sizes[n][1] for n in row)
    for n in row:
      boxes[n] = (x[n], top + height / 2, sizes[n][0], sizes[n][1])
    top += height + _GAP_Y
  return boxes, width, (top - _GAP_Y + _MARGIN) if rows else 2 * _MARGIN


def _node_svg(node: Node, box) -> str:
  cx, cy, w, h = box
  style = _STYLE[node['kind']]
  radius = h / 2 if style['radius'] is None else style['radius']
  lines = str(node.get('label', node['id'])).split('\n')
  first_y = cy - (len(lines) - 1) * _LINE_H / 2
  text = ''.join(
      f'<tspan x="{cx:.1f}" y="{first_y + i * _LINE_H:.1f}">{html.escape(line)}</tspan>'
      for i, line in enumerate(lines))
  tooltip = node.get('tooltip')
  title = f'<title>{html.escape(str(tooltip))}</title>' if tooltip else ''
  return (f'<g class="node {node["kind"]}" data-id="{html.escape(str(node["id"]))}">{title}'
          f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" '
          f'rx="{radius:.1f}" fill="{style["fill"]}" stroke="{style["stroke"]}" '
          f'stroke-width="1.2"/><text text-anchor="middle" dominant-baseline="central" '
          f'font-family="sans-serif" font-size="12" fill="#222">{text}</text></g>')


def _edge_svg(src_box, dst_box) -> str:
  x1, y1 = src_box[0], src_box[1] + src_box[3] / 2
  x2, y2 = dst_box[0], dst_box[1] - dst_box[3] / 2 - 2  # stop short: the arrowhead shows
  bend = (y2 - y1) / 2
  return (f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} '
          f'{x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="#777" '
          'stroke-width="1.2" marker-end="url(#lineage-arrow)"/>')


def render_svg(nodes: Sequence[Node], edges: Sequence[Edge]) -> str:
  """An inline <svg> of the DAG; nodes = [{'id', 'label', 'kind'} (+ optional 'tooltip')],
  edges = [(src_id, dst_id)]. Labels may hold '\\n' for a second line; all text is escaped."""
  edges = list(dict.fromkeys((str(s), str(d)) for s, d in edges))  # drop repeats, keep order
  nodes = [dict(n, id=str(n['id'])) for n in nodes]
  boxes, width, height = layout(nodes, edges)
  parts = [
      f'<svg class="dag" width="{width:.0f}" '
      f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img">',
      '<defs><marker id="lineage-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
      'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
      'fill="#777"/></marker></defs>',
  ]
  parts += [_edge_svg(boxes[s], boxes[d]) for s, d in edges]  # first: nodes paint over them
  parts += [_node_svg(n, boxes[n['id']]) for n in nodes]
  parts.append('</svg>')
  return '\n'.join(parts)
