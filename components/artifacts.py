"""Artifact types of simclr-tfx that TFX has no standard type for."""
from tfx.types import artifact


class IngestReport(artifact.Artifact):
  """report.json of an ImageIngest run: counts, quarantine, duplicates, data fingerprint."""
  TYPE_NAME = 'simclr_tfx.IngestReport'



class EdgeModel(artifact.Artifact):
  """encoder.tflite (float32), encoder_int8.tflite, preprocessing.json and parity.json."""
  TYPE_NAME = 'simclr_tfx.EdgeModel'


class Embeddings(artifact.Artifact):
  """Every ingested image's embedding by one Model, per split (components/embedder/contract.py)."""
  TYPE_NAME = 'simclr_tfx.Embeddings'
