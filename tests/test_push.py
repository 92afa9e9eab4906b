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
