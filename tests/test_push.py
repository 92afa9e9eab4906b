"""Pusher: atomic, versioned, idempotent; a crash mid-push leaves no visible version."""
import os
import shutil

import pytest

from components.pusher import push


def fake_saved_model(root):
  os.makedirs(os.path.join(root, 'variables'))
  with open(os.path.join(root, 'saved_model.pb'), 'wb') as f:
    f.write(b'graph')
  with open(os.path.join(root, 'variables', 'variables.index'), 'wb') as f:
    f.write(b'index')
  return root


def test_push_versions_increase_and_rerun_is_idempotent(tmp_path):
  model_a = fake_saved_model(str(tmp_path / 'a'))
  model_b = fake_saved_model(str(tmp_path / 'b'))
  base = str(tmp_path / 'serving')
  first = push.push_model(model_a, base, 'enc', source_uri='uri-a')
  assert os.path.isfile(os.path.join(first['destination'], 'saved_model.pb'))
  assert os.path.isfile(os.path.join(first['destination'], 'variables', 'variables.index'))
  again = push.push_model(model_a, base, 'enc', source_uri='uri-a')
  assert again['already_pushed'] and again['version'] == first['version']
  second = push.push_model(model_b, base, 'enc', source_uri='uri-b')
  assert second['version'] > first['version']
  assert push.versions(os.path.join(base, 'enc')) == [first['version'], second['version']]


def test_crash_mid_copy_leaves_nothing_servable(tmp_path, monkeypatch):
  model = fake_saved_model(str(tmp_path / 'm'))
  base = str(tmp_path / 'serving')
  real_copy = shutil.copyfile
  calls = {'n': 0}

  def copy_then_die(src, dst, **kwargs):
    calls['n'] += 1
    if calls['n'] == 2:
      raise OSError('disk full (simulated)')
    return real_copy(src, dst, **kwargs)

  monkeypatch.setattr(shutil, "copyfile", copy_then_die)
  with pytest.raises(OSError):
    push.push_model(model, base, 'enc', source_uri='uri')
  model_dir = os.path.join(base, 'enc')
  assert push.versions(model_dir) == []  # Serving sees no version at all
  monkeypatch.setattr(shutil, "copyfile", real_copy)
  result = push.push_model(model, base, 'enc', source_uri='uri')
  assert push.versions(model_dir) == [result['version']]
  assert not [n for n in os.listdir(model_dir) if n.startswith(push.STAGING_PREFIX)]


def test_refuses_a_folder_without_a_model(tmp_path):
  with pytest.raises(FileNotFoundError, match='saved_model.pb'):
    push.push_model(str(tmp_path), str(tmp_path / 'serving'), 'enc', source_uri='x')


def test_only_the_newest_versions_are_kept_and_a_pinned_one_survives(tmp_path):
  base = str(tmp_path / 'serving')
  model_dir = os.path.join(base, 'enc')
  pushed = [push.push_model(fake_saved_model(str(tmp_path / f'm{i}')), base, 'enc',
                            source_uri=f'uri-{i}')['version'] for i in range(4)]
  assert push.retire_old_versions(model_dir, keep=0) == []  # 0 keeps everything
  retired = push.retire_old_versions(model_dir, keep=2, protect=[pushed[0]])
  assert retired == [pushed[1]]
  assert push.versions(model_dir) == [pushed[0], pushed[2], pushed[3]]
  assert not [n for n in os.listdir(model_dir) if n.startswith(push.RETIRED_PREFIX)]


def test_models_config_is_updated_not_overwritten(tmp_path):
  from components.pusher import serving_files
  base = str(tmp_path / 'serving')
  os.makedirs(base)
  path = os.path.join(base, serving_files.MODELS_CONFIG)
  with open(path, 'w') as f:  # another model, and a rollback pin someone set by hand
    f.write('model_config_list { config { name: "other" base_path: "/models/other" '
            'model_platform: "tensorflow" } config { name: "enc" base_path: "/old/enc" '
            'model_platform: "tensorflow" model_version_policy { specific { versions: 7 } } } }')
  result = serving_files.update_models_config(base, 'enc', '/models/enc')
  assert result['pinned_versions'] == [7]
  parsed = serving_files.read_models_config(path)
  entries = {c.name: c for c in parsed.model_config_list.config}
  assert sorted(entries) == ['enc', 'other']
  assert entries['enc'].base_path == '/models/enc'
  assert list(entries['enc'].model_version_policy.specific.versions) == [7]
  assert entries['other'].base_path == '/models/other'
  serving_files.update_models_config(base, 'new', '/models/new')  # idempotent, additive
  serving_files.update_models_config(base, 'new', '/models/new')
  names = [c.name for c in serving_files.read_models_config(path).model_config_list.config]
  assert names == ['other', 'enc', 'new']
  # No temporary files left: the config and the serving lock's file.
  assert sorted(os.listdir(base)) == sorted([serving_files.MODELS_CONFIG, push.LOCK_FILE])


def test_a_broken_models_config_is_reported_not_replaced(tmp_path):
  from components.pusher import serving_files
  base = str(tmp_path)
  with open(os.path.join(base, serving_files.MODELS_CONFIG), 'w') as f:
    f.write('model_config_list { config { name: ')
  with pytest.raises(ValueError, match='not a valid TF Serving ModelServerConfig'):
    serving_files.update_models_config(base, 'enc', '/models/enc')


def _config(base, name):
  from components.pusher import serving_files
  return serving_files.ModelsConfigUpdate(base, name, os.path.join('/models', name))


def _entries(base):
  from components.pusher import serving_files
  parsed = serving_files.read_models_config(os.path.join(base, serving_files.MODELS_CONFIG))
  return sorted(c.name for c in parsed.model_config_list.config)


def _debris(model_dir):
  return [n for n in os.listdir(model_dir)
          if n.startswith((push.STAGING_PREFIX, push.RETIRED_PREFIX, push.JOURNAL_PREFIX))]


def test_retention_deletes_only_versions_the_pusher_wrote(tmp_path):
  base = str(tmp_path / 'serving')
  model_dir = os.path.join(base, 'enc')
  for year in range(2019, 2025):  # someone's folders, integer-named, not pushed by us
    os.makedirs(os.path.join(model_dir, str(year)))
  pushed = [push.push_model(fake_saved_model(str(tmp_path / f'm{i}')), base, 'enc',
                            source_uri=f'uri-{i}', keep=3)['version'] for i in range(5)]
  assert push.pushed_versions(model_dir) == pushed[-3:]
  assert set(range(2019, 2025)) <= set(push.versions(model_dir))


def _push_many(args):
  base, name, worker, count, barrier = args
  barrier.wait()
  results = []
  for i in range(count):
    model = fake_saved_model(os.path.join(base, '..', f'src-{name}-{worker}-{i}'))
    results.append(push.push_model(model, base, name, source_uri=f'{name}-{worker}-{i}',
                                   config=_config(base, name))['version'])
  return results


def test_concurrent_pushes_to_one_serving_folder_all_succeed(tmp_path):
  """Four processes push at once into one folder, two model names, three pushes each: every
  push gets its own version, models.config keeps both entries, nothing is left behind."""
  import multiprocessing
  base = str(tmp_path / 'serving')
  os.makedirs(base)
  context = multiprocessing.get_context('fork')
  barrier = context.Manager().Barrier(4)
  jobs = [(base, name, worker, 3, barrier) for name in ('a', 'b') for worker in range(2)]
  with context.Pool(4) as pool:
    results = pool.map(_push_many, jobs)
  for name, got in (('a', results[0] + results[1]), ('b', results[2] + results[3])):
    model_dir = os.path.join(base, name)
    assert len(set(got)) == 6 and sorted(got) == push.pushed_versions(model_dir)
    assert not _debris(model_dir)
  assert _entries(base) == ['a', 'b']


def test_a_push_removes_only_its_own_staging_folder_or_a_dead_ones(tmp_path):
  base = str(tmp_path / 'serving')
  model_dir = os.path.join(base, 'enc')
  os.makedirs(model_dir)
  live = push._Staging(model_dir)  # another push, still copying  # pylint: disable=protected-access
  with open(os.path.join(live.path, 'saved_model.pb'), 'wb') as f:
    f.write(b'half')
  dead = os.path.join(model_dir, push.STAGING_PREFIX + 'killed')  # a killed push's: no lock held
  os.makedirs(dead)
  open(dead + '.lock', 'w').close()
  push.push_model(fake_saved_model(str(tmp_path / 'm')), base, 'enc', source_uri='uri')
  assert os.path.isfile(os.path.join(live.path, 'saved_model.pb'))
  assert not os.path.exists(dead) and not os.path.exists(dead + '.lock')
  live.close()
  assert not _debris(model_dir)


def test_a_broken_models_config_stops_the_push_before_any_version_is_visible(tmp_path):
  from components.pusher import serving_files
  base = str(tmp_path / 'serving')
  os.makedirs(base)
  with open(os.path.join(base, serving_files.MODELS_CONFIG), 'w') as f:
    f.write('model_config_list { config { name: ')
  with pytest.raises(ValueError, match='not a valid TF Serving ModelServerConfig'):
    push.push_model(fake_saved_model(str(tmp_path / 'm')), base, 'enc', source_uri='uri',
                    config=_config(base, 'enc'))
  assert push.versions(os.path.join(base, 'enc')) == []
  assert not _debris(os.path.join(base, 'enc'))


def test_a_failed_models_config_write_rolls_the_version_back(tmp_path, monkeypatch):
  base = str(tmp_path / 'serving')
  first = push.push_model(fake_saved_model(str(tmp_path / 'm1')), base, 'enc', source_uri='u1',
                          config=_config(base, 'enc'))['version']
  real_replace = os.replace

  def full_disk(src, dst):
    if dst.endswith('models.config'):
      raise OSError(28, 'No space left on device')
    return real_replace(src, dst)

  monkeypatch.setattr(os, 'replace', full_disk)
  with pytest.raises(OSError, match='No space left'):
    push.push_model(fake_saved_model(str(tmp_path / 'm2')), base, 'enc', source_uri='u2',
                    config=_config(base, 'enc'))
  model_dir = os.path.join(base, 'enc')
  assert push.versions(model_dir) == [first]
  assert not _debris(model_dir)


def test_sigkill_between_the_rename_and_the_config_update_is_rolled_back(tmp_path):
  """Failpoint push.after_rename: the version is on disk, models.config never heard of it,
  the Pusher never finished. The next push to the folder rolls it back and publishes anew."""
  import signal
  import subprocess
  import sys
  base = str(tmp_path / 'serving')
  model = fake_saved_model(str(tmp_path / 'm'))
  script = ('import sys; sys.path.insert(0, %r)\n'
            'from components.pusher import push, serving_files\n'
            'push.push_model(%r, %r, "enc", source_uri="uri", '
            'config=serving_files.ModelsConfigUpdate(%r, "enc", "/models/enc"))\n'
            % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), model, base, base))
  killed = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, env={**os.environ,
                                            'SIMCLR_TFX_FAILPOINT': 'push.after_rename'})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  model_dir = os.path.join(base, 'enc')
  orphan = push.versions(model_dir)
  assert len(orphan) == 1 and not os.path.exists(os.path.join(base, 'models.config'))
  assert push.find_pushed(model_dir, 'uri') is None  # an unfinished push does not count
  result = push.push_model(model, base, 'enc', source_uri='uri', config=_config(base, 'enc'))
  assert result['rolled_back'] == orphan
  assert push.versions(model_dir) == [result['version']] != orphan
  assert _entries(base) == ['enc'] and not _debris(model_dir)


def test_the_baseline_from_the_serving_folder_is_the_newest_finished_push(tmp_path):
  """What a run without ML Metadata queries takes as the latest blessed model
  (components/baseline.py): not a version copied in by hand, not a push that did not finish."""
  from components import baseline
  base = str(tmp_path / 'serving')
  model_dir = baseline.model_dir(base, 'enc')
  assert baseline.from_serving_folder(model_dir) is None  # nothing pushed yet
  first = push.push_model(fake_saved_model(str(tmp_path / 'a')), base, 'enc', source_uri='uri-a',
                          metadata={'model_artifact_id': 7})
  second = push.push_model(fake_saved_model(str(tmp_path / 'b')), base, 'enc',
                           source_uri='uri-b')
  shutil.copytree(second['destination'], os.path.join(model_dir, '99'))  # not ours: no record
  os.remove(os.path.join(model_dir, '99', push.SOURCE_FILE))
  found = baseline.from_serving_folder(model_dir)
  assert (found.pushed_version, found.model_uri, found.saved_model_dir) == (
      second['version'], 'uri-b', second['destination'])
  with open(os.path.join(model_dir, f'{push.JOURNAL_PREFIX}{second["version"]}.json'), 'w'):
    pass  # the second push's journal is still there: it did not finish
  found = baseline.from_serving_folder(model_dir)
  assert (found.pushed_version, found.model_uri, found.model_id) == (first['version'], 'uri-a', 7)
