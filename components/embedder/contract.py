"""What Embedder promises the LinearEvaluator and later consumers of the embeddings
(TensorFlow-free): the records of an Embeddings artifact and its properties.

An Embeddings artifact has one folder per split (Split-train, Split-eval), each of gzip
TFRecord files of tf.train.Example records: every ingested image of that split, in no set
order, with the ingest's keys for its identity and label (schemas/: image/sha256,
image/filename, image/class/label, image/labelled) and its embedding under EMBEDDING_KEY, as
the served model's `serving_default` returns it for that image's stored bytes.
"""

import os

EMBEDDING_KEY = 'embedding'  # float list of EMBEDDING_DIM values
FILE_PREFIX = 'embeddings'

# Properties of the Embeddings artifact.
MODEL_URI = 'model_uri'  # the Model artifact whose SavedModel computed them
EMBEDDING_DIM = 'embedding_dim'
NUM_EMBEDDED = 'num_embedded'  # over both splits; num_<split> per split (ingest's split_count)
IMAGES_PER_SECOND = 'images_per_second'  # of the whole Beam pipeline, start to end


def split_dir(embeddings_uri: str, split: str) -> str:
  """The folder of one split: Split-<name>, as in TFX's Examples (the type declares no
  split_names property: Kubeflow's compiler takes only declared schemas for custom types)."""
  return os.path.join(embeddings_uri, f'Split-{split}')
