"""What a person reads after an evaluation: a confusion-matrix PNG, a 2-D map of the embeddings
coloured by class (PNG), and TensorBoard projector files for exploring them interactively."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

PROJECTOR_DIR = 'projector'
PROJECTOR_TENSOR = 'embedding/.ATTRIBUTES/VARIABLE_VALUE'
_MAP_POINTS = 1000  # t-SNE cost grows quadratically; 1,000 points show the structure


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only: no display on servers
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def confusion_matrix_png(path: str, confusion: Sequence[Sequence[int]],
                         class_names: Sequence[str], title: str) -> str:
  plt = _pyplot()
  matrix = np.asarray(confusion)
  n = len(class_names)
  size = min(14.0, 3.0 + 0.45 * n)
  fig, ax = plt.subplots(figsize=(size, size))
  ax.imshow(matrix, cmap='Blues')
  ax.set_xticks(range(n), labels=class_names, rotation=90 if n > 10 else 0)
  ax.set_yticks(range(n), labels=class_names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if n <= 30:  # counts stay readable
    high = matrix.max() if matrix.size else 0
    for i in range(n):
      for j in range(n):
        ax.text(j, i, str(matrix[i, j]), ha='center', va='center', fontsize=8,
                color='white' if matrix[i, j] > high / 2 else 'black')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def embedding_map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
  """[n, 2] coordinates: t-SNE (after PCA to 50 dimensions) when there are enough points,
  PCA otherwise."""
  from sklearn.decomposition import PCA  # pylint: disable=g-import-not-at-top
  x = np.asarray(embeddings, np.float32)
  if len(x) < 3:
    return np.zeros((len(x), 2), np.float32)
  reduced = PCA(n_components=min(50, x.shape[1], len(x)), random_state=seed).fit_transform(x)
  if len(x) < 20:
    return reduced[:, :2] if reduced.shape[1] >= 2 else np.pad(reduced, ((0, 0), (0, 1)))
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  perplexity = float(min(30.0, (len(x) - 1) / 3.0))
  return TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed,
              learning_rate='auto').fit_transform(reduced)


def embedding_map_png(path: str, embeddings: np.ndarray, labels: np.ndarray,
                      class_names: Dict[int, str], title: str, seed: int = 0) -> Dict:
  rng = np.random.default_rng(seed)
  keep = np.sort(rng.permutation(len(labels))[:_MAP_POINTS])
  coords = embedding_map(embeddings[keep], seed)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 8))
  cmap = plt.get_cmap('tab20' if len(class_names) > 10 else 'tab10')
  for i, (label, name) in enumerate(sorted(class_names.items())):
    mask = labels[keep] == label
    ax.scatter(coords[mask, 0], coords[mask, 1], s=6, color=cmap(i % cmap.N), label=name)
  if len(class_names) <= 20:
    ax.legend(markerscale=3, fontsize=8, loc='best')
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return {'points': int(len(keep)), 'method': 'tsne' if len(keep) >= 20 else 'pca'}


def write_projector(log_dir: str, embeddings: np.ndarray, labels: List[str]) -> str:
  """TensorBoard projector files: `tensorboard --logdir <log_dir>`, Projector tab."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins import projector  # pylint: disable=g-import-not-at-top
  os.makedirs(log_dir, exist_ok=True)
  with open(os.path.join(log_dir, 'metadata.tsv'), 'w', encoding='utf-8') as f:
    for label in labels:
      f.write(f'{label}\n')
  checkpoint = tf.train.Checkpoint(embedding=tf.Variable(np.asarray(embeddings, np.float32)))
  checkpoint.save(os.path.join(log_dir, 'embedding.ckpt'))
  config = projector.ProjectorConfig()
  entry = config.embeddings.add()
  entry.tensor_name = PROJECTOR_TENSOR
  entry.metadata_path = 'metadata.tsv'
  projector.visualize_embeddings(log_dir, config)
  return log_dir
