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
  assert [n for n in os.listdir(base)] == [serving_files.MODELS_CONFIG]  # no temp files left


def test_a_broken_models_config_is_reported_not_replaced(tmp_path):
  from components.pusher import serving_files
  base = str(tmp_path)
  with open(os.path.join(base, serving_files.MODELS_CONFIG), 'w') as f:
    f.write('model_config_list { config { name: ')
  with pytest.raises(ValueError, match='not a valid TF Serving ModelServerConfig'):
    serving_files.update_models_config(base, 'enc', '/models/enc')
