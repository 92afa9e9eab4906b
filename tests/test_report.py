"""`simclr-tfx report`: one self-contained HTML page about the latest run, and its SVG graph."""
import base64
import html
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline import run_record
from simclr_tools import cli, report, svg_graph

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
_REF = re.compile(r'\b(src|href)\s*=\s*["\']([^"\']*)["\']', re.IGNORECASE)


# ---- svg_graph --------------------------------------------------------------------------------

def _nodes(*ids, kind='execution'):
  return [{'id': i, 'label': i, 'kind': kind} for i in ids]


def test_layers_follow_the_longest_path_and_the_sink_is_last():
  nodes = _nodes('a', 'b', 'c', 'sink') + _nodes('lonely', kind='artifact')
  edges = [('a', 'b'), ('b', 'c'), ('a', 'c'), ('c', 'sink'), ('a', 'sink')]
  layer = svg_graph.layers(nodes, edges)
  assert layer == {'a': 0, 'b': 1, 'c': 2, 'sink': 3, 'lonely': 0}
  assert layer['sink'] == max(layer.values())


def test_layout_puts_every_edge_downwards():
  nodes = _nodes('a', 'b', 'c', 'd')
  edges = [('a', 'b'), ('a', 'c'), ('b', 'd'), ('c', 'd')]
  boxes, width, height = svg_graph.layout(nodes, edges)
  for src, dst in edges:
    assert boxes[src][1] < boxes[dst][1]
  assert all(0 < b[0] < width and 0 < b[1] < height for b in boxes.values())


def test_labels_are_escaped_and_shapes_follow_the_kind():
  nodes = [{'id': 'x<1>', 'label': '<script>alert("&")</script>', 'kind': 'execution'},
           {'id': 'y', 'label': 'Model#7', 'kind': 'artifact', 'tooltip': 'uri <a&b>'}]
  svg = svg_graph.render_svg(nodes, [('x<1>', 'y'), ('x<1>', 'y')])
  assert '<script>' not in svg and '&lt;script&gt;' in svg and '&amp;' in svg
  assert 'data-id="x&lt;1&gt;"' in svg and '<title>uri &lt;a&amp;b&gt;</title>' in svg
  assert svg.count('class="node execution"') == 1 and svg.count('class="node artifact"') == 1
  assert svg.count('class="edge"') == 1  # the repeated edge is drawn once
  assert svg.startswith('<svg') and svg.rstrip().endswith('</svg>')


def test_bad_graphs_are_refused():
  with pytest.raises(ValueError, match='cycle'):
    svg_graph.layers(_nodes('a', 'b'), [('a', 'b'), ('b', 'a')])
  with pytest.raises(ValueError, match='unknown node'):
    svg_graph.layers(_nodes('a'), [('a', 'zz')])
  with pytest.raises(ValueError, match='kind'):
    svg_graph.layers([{'id': 'a', 'label': 'a', 'kind': 'box'}], [])


# ---- the report of a real run -----------------------------------------------------------------

@pytest.fixture(scope='module')
def written(local_run, tmp_path_factory):
  """(path of the page, its text, the summary and executions of the run it describes). The
  expectations are read at the same time as the page: other tests may add runs to this OUT."""
  _, _, metadata_path = local_run
  out = os.path.dirname(metadata_path)
  path = report.write_report(out, str(tmp_path_factory.mktemp('report') / 'page.html'))
  with open(path, encoding='utf-8') as f:
    page = f.read()
  store = run_record.open_store(metadata_path)
  executions = run_record.run_executions(store, run_record.latest_run(store))
  return path, page, run_record.run_summary(metadata_path), executions


def test_page_is_one_file_with_nothing_external(written):
  path, page, _, _ = written
  assert os.path.isfile(path) and page.startswith('<!DOCTYPE html>')
  assert 'http://' not in page and 'https://' not in page
  assert not re.search(r'<(script|link|iframe|object|embed)\b', page, re.IGNORECASE)
  refs = _REF.findall(page)
  assert refs, 'the page inlines images'
  for attribute, value in refs:
    assert value.startswith('data:') if attribute.lower() == 'src' else value.startswith('#'), \
        (attribute, value[:80])
  urls = re.findall(r'url\(\s*["\']?([^)"\']*)', page)
  assert all(u.startswith('#') for u in urls), urls  # only in-page refs (the SVG arrowhead)


def test_header_names_the_run_and_where_the_model_went(written):
  _, page, summary, _ = written
  assert summary['run_id'] in page
  if summary['pushed']:
    assert f"version {summary['pushed_version']}" in page
  else:
    assert 'not pushed' in page and html.escape(summary['push_reason'] or 'no Pusher') in page
  assert summary['data_fingerprint'] in page
  assert html.escape(summary['blessing_reason']) in page  # text is escaped: '>=' -> '&gt;='
  for heading in report.SECTIONS:
    assert f'<h2>{heading}</h2>' in page


def test_metrics_table_holds_the_probe_numbers(written):
  _, page, summary, _ = written
  with open(os.path.join(summary['evaluation_dir'], 'metrics.json'), encoding='utf-8') as f:
    metrics = json.load(f)
  assert metrics['linear_top1'] is not None
  for key in ('linear_top1', 'linear_top5', 'knn_top1', 'raw_pixels_linear_top1',
              'random_init_encoder_linear_top1', 'baseline_linear_top1'):
    if metrics.get(key) is not None:
      assert f'data-key="{key}">{100 * metrics[key]:.2f}%' in page, key
  for fraction in (metrics.get('linear_probe_by_fraction') or {}).values():
    if fraction.get('top1') is not None:
      assert f"{100 * fraction['top1']:.2f}%" in page
  assert ('BLESSED' if metrics['blessed'] else 'NOT BLESSED') in page


def test_classifier_section_holds_the_four_models(written):
  _, page, summary, _ = written
  classifier = summary['classifier']
  for model, top1 in classifier['top1'].items():
    assert f'{100 * top1:.2f}%' in page, model
    assert f"{classifier['ece'][model]:.3f}" in page, model
  if classifier['pushed']:
    assert f"pushed as version {classifier['pushed_version']}" in page


def test_lineage_svg_has_one_node_per_execution(written):
  _, page, _, executions = written
  svg, = re.findall(r'<svg\b.*?</svg>', page, re.DOTALL)
  assert svg.count('class="node execution"') == len(executions)
  for e in executions:
    assert f'data-id="e{e["id"]}"' in svg and e['component'] in svg
  artifact_ids = {a['id'] for e in executions for side in ('inputs', 'outputs')
                  for arts in e[side].values() for a in arts}
  assert svg.count('class="node artifact"') == len(artifact_ids)


def test_training_curves_are_an_inline_png_and_hyperparameters_a_table(written):
  _, page, _, executions = written
  data, = re.findall(r'id="training-curves" src="data:image/png;base64,([^"]+)"', page)
  image = Image.open(io.BytesIO(base64.b64decode(data)))
  image.load()
  assert image.format == 'PNG' and image.size[0] > 100 and image.size[1] > 100
  for tag in ('loss', 'contrastive_accuracy', 'learning_rate'):
    assert f'<td>{tag}</td>' in page  # the table of last values next to the curves
  trainer, = [e for e in executions if e['component'] == 'SimCLRTrainer']
  store = run_record.open_store(written[2]['metadata'])
  hparams = run_record.properties(store.get_executions_by_id([trainer['id']])[0])
  for name in ('batch_size', 'temperature', 'optimizer', 'backbone'):
    assert f'<tr><td>{name}</td><td>{hparams[name]}</td></tr>' in page


def test_plots_of_the_run_are_inlined(written):
  _, page, _, _ = written
  for alt in ('augmentation preview', 'embedding map', 'confusion matrix'):
    assert re.search(f'<img alt="{alt}" src="data:image/png;base64,', page), alt
  assert 'simclr-tfx lineage --output' in page


def test_missing_pieces_read_as_absent():
  assert report.read_scalars(None) == {}
  assert report.read_metrics(None) == {}
  assert report.curves_png({'gradient_norm': [(1, 2.0)]}) is None


def test_an_output_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match='simclr-tfx run --output'):
    report.build_report(str(tmp_path))
  assert cli.main(['report', '--output', str(tmp_path)]) == 1
  assert 'no ML Metadata store' in capsys.readouterr().err


def test_cli_writes_the_report(local_run, tmp_path, capsys):
  _, _, metadata_path = local_run
  out = os.path.dirname(metadata_path)
  assert cli.main(['report', '--output', out]) == 0
  default = os.path.join(out, report.REPORT_FILE)
  assert os.path.isfile(default) and default in capsys.readouterr().out
  chosen = tmp_path / 'sub' / 'r.html'
  assert cli.main(['report', '--output', out, '--html', str(chosen)]) == 0
  assert chosen.read_text(encoding='utf-8').startswith('<!DOCTYPE html>')


# ---- rendered by a real browser ---------------------------------------------------------------

def _browser():
  found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
  if not found:
    pytest.skip('Chromium not installed (Debian: apt-get install chromium); the HTML report was '
                'not rendered')
  return found


def _headless(browser, profile, *args) -> subprocess.CompletedProcess:
  command = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
             f'--user-data-dir={profile}', *args]
  return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_chromium_renders_the_page(written, tmp_path):
  browser = _browser()
  path, _, _, _ = written
  url = 'file://' + os.path.abspath(path)
  shot = tmp_path / 'shot.png'
  done = _headless(browser, tmp_path / 'profile', f'--screenshot={shot}',
                   '--window-size=1280,4000', url)
  assert shot.is_file(), done.stderr[-2000:]
  pixels = np.asarray(Image.open(shot).convert('RGB'))
  assert pixels.shape[:2] == (4000, 1280)
  non_white = float((pixels.min(axis=-1) < 245).mean())
  colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
  assert non_white > 0.01 and colours > 200, (non_white, colours)
  dom = _headless(browser, tmp_path / 'profile2', '--dump-dom', url)
  assert dom.returncode == 0, dom.stderr[-2000:]
  for heading in report.SECTIONS:
    assert f'<h2>{heading}</h2>' in dom.stdout, heading
  assert '<svg' in dom.stdout
