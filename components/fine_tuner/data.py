"""The fine-tuning data: the labelled subset the classifiers learn from, every train image for
the distillation, and the augmented views of both.

The subset is chosen as ClassifierEvaluator's probe chooses its own: the labelled train records
in content-hash (sha256) order, then probe.balanced_subset at finetune_label_fraction. Both read
the same records in the same order, so the fine-tuned model and the probe it is compared with
learn from the same labels. Decoded images are cached in memory as uint8, as the trainer's are.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import tensorflow as tf

from components.dual_view_transform import augment, dataset as dv_dataset
from components.linear_evaluator import probe

def view_policy(policy: Dict[str, Any], augmentation: str) -> Dict[str, Any]:
  """The views the classifiers train on: the pretraining policy's crop and flip (SimCLRv2
  fine-tunes with these only), or with 'simclr' its colour, greyscale and blur too; at the
  served image_size, also where the encoder pretrained on smaller crops: a new layer fitted
  to the smaller crops' features does not carry over to the served size (docs/benchmarks.md,
  "make bench-finetune")."""
  view = dict(policy, crop_size=int(policy['image_size']))
  if augmentation == 'crop_flip':
    view.update(color_jitter=dict(policy['color_jitter'], prob=0.0), grayscale_prob=0.0,
                gaussian_blur=dict(policy['gaussian_blur'], prob=0.0),
                solarize={'prob': 0.0, 'threshold': 0.5})
  return view


def _records(split_uri: str, image_size: int) -> tf.data.Dataset:
  return dv_dataset.load_transformed(split_uri, image_size, with_sha256=True)


def chosen_labels(split_uri: str, image_size: int, fraction: float):
  """(sha256 of the chosen labelled records, their labels), in content-hash order."""
  usable = _records(split_uri, image_size).filter(
      lambda r: (r['label'] >= 0) & (r['labelled'] == 1))
  hashes, labels = [], []
  for batch in usable.map(lambda r: (r['sha256'], r['label'])).batch(4096).as_numpy_iterator():
    hashes.append(batch[0])
    labels.append(batch[1])
  if not labels:
    return np.zeros([0], object), np.zeros([0], np.int64)
  hashes, labels = np.concatenate(hashes), np.concatenate(labels)
  if np.any(hashes == b''):
    raise ValueError(f'the transformed examples at {split_uri} carry no sha256 (made by an older '
                     'DualViewTransform); rerun the pipeline with enable_cache=false')
  order = np.argsort(hashes, kind='stable')
  hashes, labels = hashes[order], labels[order]
  keep = probe.balanced_subset(labels, fraction)
  return hashes[keep], labels[keep]


def _normalized(images, batch):
  """Unit-range images normalised with each record's own channel statistics, as served."""
  return augment.normalize(images, tf.reshape(batch['mean'], [-1, 1, 1, 3]),
                           tf.reshape(batch['std'], [-1, 1, 1, 3]))


def _views(policy, seed: int, with_label_mask: bool):
  def make(batch, index):
    step_seed = tf.stack([tf.constant(seed, tf.int64), index])
    images = augment.simclr_view(tf.cast(batch['image'], tf.float32) / 255.0, policy, step_seed)
    x = _normalized(images, batch)
    if with_label_mask:
      return x, tf.maximum(batch['label'], 0), batch['use_label']
    return x, batch['label']
  return make


def _batches(records, batch_size: int, seed: int, start_step: int, make) -> tf.data.Dataset:
  batches = (records.cache().repeat()
             .shuffle(10_000, seed=seed + start_step, reshuffle_each_iteration=True)
             .batch(batch_size, drop_remainder=True))
  return (tf.data.Dataset.zip((batches, tf.data.Dataset.counter(start=start_step)))
          .map(make, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def _membership(hashes):
  keys = tf.constant(list(hashes) or [b''], tf.string)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int64)), default_value=0)
  return lambda sha: table.lookup(sha) == 1 if len(hashes) else tf.constant(False)


def labelled_views(split_uri: str, policy, hashes, batch_size: int, seed: int,
                   start_step: int = 0) -> tf.data.Dataset:
  """Endless batches of (augmented view, label) of the chosen labelled records."""
  member = _membership(hashes)
  chosen = _records(split_uri, int(policy['image_size'])).filter(
      lambda r: member(r['sha256']))
  return _batches(chosen, batch_size, seed, start_step, _views(policy, seed, False))


def all_views(split_uri: str, policy, hashes, batch_size: int, seed: int,
              start_step: int = 0) -> tf.data.Dataset:
  """Endless batches of (augmented view, label or 0, whether the label may be used) of every
  record of the split: the distillation's data."""
  member = _membership(hashes)
  records = _records(split_uri, int(policy['image_size'])).map(
      lambda r: dict(r, use_label=tf.cast(member(r['sha256']), tf.float32)))
  return _batches(records, batch_size, seed, start_step, _views(policy, seed, True))


def labelled_images(split_uri: str, image_size: int, hashes, batch_size: int = 256):
  """One pass of (normalised whole image, label) batches of the chosen labelled records, as
  served (no augmentation): what the new layer's initial linear probe is fitted on."""
  member = _membership(hashes)

  def whole(batch):
    return _normalized(tf.cast(batch['image'], tf.float32) / 255.0, batch), batch['label']
  return (_records(split_uri, image_size).filter(lambda r: member(r['sha256']))
          .batch(batch_size).map(whole, num_parallel_calls=tf.data.AUTOTUNE))
