"""What ImageIngest promises the components and tools after it (TensorFlow-free): the files in
its artifacts and the properties it records in ML Metadata."""

REPORT_FILE = 'report.json'  # in the IngestReport artifact: counts, quarantine, duplicates
SPLITS = ('train', 'eval')

# Properties of the Examples and IngestReport artifacts.
DATA_FINGERPRINT = 'data_fingerprint'  # content hash of every kept image and its label
SOURCE_DIR = 'source_dir'
NUM_EXAMPLES = 'num_examples'
NUM_QUARANTINED = 'num_quarantined'
NUM_DUPLICATES = 'num_duplicates'
NUM_LABELLED_FOR_PROBE = 'num_labelled_for_probe'
COUNTS = (NUM_EXAMPLES, NUM_QUARANTINED, NUM_DUPLICATES, NUM_LABELLED_FOR_PROBE)
# Of the Examples artifact only: num_<split> per split, and the class names (JSON list; the
# label of a record indexes it).
CLASSES = 'classes'


def split_count(split: str) -> str:
  return f'num_{split}'
