"""Lineage queries on ML Metadata: where a pushed version came from, and every model trained from a
data fingerprint. The three runs of conftest.three_runs on the same data give two pushed
versions to tell apart and a third model that was not pushed."""
import json
import os
import shutil

import pytest

def test_the_newest_version_traces_back_to_the_ingested_folder(three_runs):
  from simclr_tools import lineage
  out, _, second, _ = three_runs
  chain = lineage.model_lineage(os.path.join(out, 'metadata.sqlite'))
  assert chain['pushed_version'] == second['pushed_version']
  steps = {s['component']: s for s in chain['chain']}
  assert list(steps) == ['ImageIngest', 'DualViewTransform', 'SimCLRTrainer', 'Embedder',
                         'EdgeExport', 'LinearEvaluator', 'Pusher']
  trainer = steps['SimCLRTrainer']['parameters']
  assert trainer['seed'] == 7 and trainer['backbone'] and 'temperature' in trainer
  examples = next(a for a in steps['ImageIngest']['outputs'] if a['type'] == 'Examples')
  assert examples['properties']['data_fingerprint'] == second['data_fingerprint']
  assert examples['properties']['source_dir'] == second['data_dir']
  evaluation = next(a for a in steps['LinearEvaluator']['outputs']
                    if a['type'] == 'ModelEvaluation')
  assert abs(float(evaluation['properties']['linear_top1']) - second['linear_top1']) < 1e-4
  pushed = next(a for a in steps['Pusher']['outputs'] if a['type'] == 'PushedModel')
  assert pushed['properties']['pushed_destination'] == second['pushed_destination']


def test_an_older_version_is_found_by_number_and_a_missing_one_is_named(three_runs):
  from simclr_tools import lineage
  out, first, _, _ = three_runs
  path = os.path.join(out, 'metadata.sqlite')
  chain = lineage.model_lineage(path, version=int(first['pushed_version']))
  trainer = next(s for s in chain['chain'] if s['component'] == 'SimCLRTrainer')
  assert trainer['parameters']['seed'] == 42
  with pytest.raises(LookupError, match='pushed versions'):
    lineage.model_lineage(path, version=1)


def test_forward_lineage_lists_both_models_of_the_fingerprint(three_runs):
  from simclr_tools import lineage
  out, first, second, _ = three_runs
  assert first['data_fingerprint'] == second['data_fingerprint']
  models = lineage.models_from_fingerprint(os.path.join(out, 'metadata.sqlite'),
                                           first['data_fingerprint'][:10])
  assert len(models) == 3
  versions = sorted(str(v) for m in models for v in m['pushed_versions'])
  assert versions == sorted([str(first['pushed_version']), str(second['pushed_version'])])
  assert sorted(m['blessed'] for m in models) == [False, True, True]  # the third lost
  with pytest.raises(LookupError, match='no ingested data'):
    lineage.models_from_fingerprint(os.path.join(out, 'metadata.sqlite'), 'ffffffffff')


def test_cli_text_json_dot_and_png(three_runs, tmp_path, capsys):
  from simclr_tools import cli
  out, first, second, _ = three_runs
  assert cli.main(['lineage', '--output', out]) == 0
  text = capsys.readouterr().out
  assert f"pushed encoder version {second['pushed_version']}" in text
  assert second['data_fingerprint'][:16] in text and 'trainer parameters' in text
  assert cli.main(['lineage', '--output', out, '--json', '--dot', str(tmp_path / 'g.dot'),
                   '--png', str(tmp_path / 'g.png')]) == 0
  as_json = json.loads(capsys.readouterr().out)
  executions = [n for n in as_json['graph']['nodes'] if n['kind'] == 'execution']
  dot = (tmp_path / 'g.dot').read_text()
  assert dot.startswith('digraph lineage {')
  assert dot.count('shape=box') == len(executions) == 7
  assert dot.count(' -> ') == len(as_json['graph']['edges'])
  if shutil.which('dot'):
    assert (tmp_path / 'g.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  else:
    assert not (tmp_path / 'g.png').exists()
  assert cli.main(['lineage', '--output', out, '--data-fingerprint',
                   first['data_fingerprint'][:8]]) == 0
  assert capsys.readouterr().out.count('Model #') == 3
