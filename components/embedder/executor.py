"""Embedder executor: a Beam pipeline of RunInference over both ingested splits (inference.py),
then a count of what it wrote against the ingest's counts, so a record lost on the way fails
the step instead of shrinking the evaluation."""
from __future__ import annotations

import logging
import os
import time

from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import beam_executor, io_utils
from components.embedder import contract, inference
from components.image_ingest import contract as ingest_contract
from components.image_ingest.contract import SPLITS


class Executor(beam_executor.BeamExecutor):

  def Do(self, input_dict, output_dict, exec_properties):
    io_utils.make_output_dirs(output_dict)
    started = time.time()
    examples = artifact_utils.get_single_instance(input_dict['examples'])
    model = artifact_utils.get_single_instance(input_dict['model'])
    embeddings = artifact_utils.get_single_instance(output_dict['embeddings'])
    expected = {s: examples.get_int_custom_property(ingest_contract.split_count(s))
                for s in SPLITS}
    saved_model = path_utils.serving_model_path(model.uri)
    logging.info('Embedder: %d images (%s) through %s with RunInference', sum(expected.values()),
                 ', '.join(f'{s} {n}' for s, n in expected.items()), saved_model)

    with self._make_beam_pipeline() as p:
      for split in SPLITS:
        if expected[split]:
          files = io_utils.split_files(artifact_utils.get_split_uri([examples], split))
          out = os.path.join(contract.split_dir(embeddings.uri, split), contract.FILE_PREFIX)
          _ = p | f'Embed[{split}]' >> inference.EmbedSplit(files, saved_model, out, split,
                                                            expected[split])

    seconds = time.time() - started
    counts, dim = self._check(embeddings, expected)
    total = sum(counts.values())
    embeddings.set_string_custom_property(contract.MODEL_URI, model.uri)
    embeddings.set_int_custom_property(contract.EMBEDDING_DIM, dim)
    embeddings.set_int_custom_property(contract.NUM_EMBEDDED, total)
    for split, count in counts.items():
      embeddings.set_int_custom_property(ingest_contract.split_count(split), count)
    embeddings.set_float_custom_property(contract.IMAGES_PER_SECOND, total / max(seconds, 1e-9))
    logging.info('Embedder: %d embeddings of %d numbers in %.1f s, %.1f images/s', total, dim,
                 seconds, total / max(seconds, 1e-9))

  @staticmethod
  def _check(embeddings, expected: dict):
    """Counts per split and the embedding size, streamed (the corpus's embeddings need not fit
    in memory); raises when a split lost or gained records."""
    counts, dims = {}, set()
    for split in SPLITS:
      counts[split], split_dims = io_utils.count_embeddings(
          contract.split_dir(embeddings.uri, split))
      dims |= split_dims
    if counts != expected or len(dims) > 1:
      raise RuntimeError(f'Embedder wrote {counts} records (expected {expected}) of sizes '
                         f'{sorted(dims)}: the Beam pipeline lost or repeated records; run again')
    return counts, dims.pop() if dims else 0
