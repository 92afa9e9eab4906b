"""The project's custom artifact types under their MLMD type names.

TFX's Kubeflow V2 container entrypoint rebuilds each input artifact from its type's schema title,
which for a non-TFX type is its TYPE_NAME ('simclr_tfx.IngestReport'), by importing that path.
This package makes those names importable in the pipeline image.
"""
from components.artifacts import EdgeModel, Embeddings, IngestReport

__all__ = ['EdgeModel', 'Embeddings', 'IngestReport']
