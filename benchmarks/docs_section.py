"""Writes a benchmark's results into docs/benchmarks.md between its own markers, so reruns
replace their section instead of appending."""
import os

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
                   'benchmarks.md')


def write_section(name: str, title: str, lines) -> str:
  """Replaces the block between <!-- NAME:start --> and <!-- NAME:end --> (appended under
  `title` the first time). Returns the block."""
  start, end = f'<!-- {name}:start -->', f'<!-- {name}:end -->'
  block = '\n'.join([start, *lines, end])
  with open(DOC, encoding='utf-8') as f:
    text = f.read()
  if start in text:
    text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip() + f'\n\n## {title}\n\n' + block + '\n'
  with open(DOC, 'w', encoding='utf-8') as f:
    f.write(text)
  return block
