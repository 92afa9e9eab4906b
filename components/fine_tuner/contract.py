"""What FineTuner promises ClassifierEvaluator, EdgeExport, the Pusher and the tools
(TensorFlow-free): the files of its outputs and the properties of its Model and ModelRun."""

# The classifier is a standard Model artifact; KIND tells it from an encoder (EdgeExport, the
# Pusher and lineage read it). An encoder Model carries no KIND.
KIND = 'kind'
CLASSIFIER_KIND = 'classifier'
ENCODER_KIND = 'encoder'

# The classifier is served as its own model beside the encoder: <model_name>_classifier.
CLASSIFIER_MODEL_SUFFIX = '_classifier'

# Properties of the classifier Model.
ENCODER_MODEL_URI = 'encoder_model_uri'  # the pretrained encoder it came from
ENCODER_MODEL_ID = 'encoder_model_id'
CLASS_NAMES = 'class_names'  # JSON list: class index -> name (the ingest's)
NUM_CLASSES = 'num_classes'
SERVED_STAGE = 'served_stage'  # distilled | finetuned
TOP_K = 'top_k'
IMAGE_SIZE = 'image_size'
BACKBONE = 'backbone'
WIDTH_MULTIPLIER = 'width_multiplier'
NUM_LABELS = 'num_labels'  # labelled train images the classifiers learnt from
LABEL_FRACTION = 'label_fraction'  # finetune_label_fraction of the labelled train records

# In the ModelRun folder: one SavedModel per stage (the candidates ClassifierEvaluator compares),
# the stages' outcome and TensorBoard events per stage.
STAGES = ('finetuned', 'distilled', 'supervised')
MODELS_DIR = 'models'  # <ModelRun>/models/<stage>/: a SavedModel of the classifier's signatures
OUTCOME_FILE = 'finetune.json'
LABELS_FILE = 'labels.txt'  # one class name per line, in class-index order (TFLite convention)

# The classifier SavedModel's served signature: encoded images in, the top-k out.
SERVING_SIGNATURE = 'serving_default'
SERVING_INPUT = 'images'
CLASSES_OUTPUT = 'classes'  # string [B, k]: class names, most probable first
CLASS_IDS_OUTPUT = 'class_ids'  # int32 [B, k]
PROBABILITIES_OUTPUT = 'probabilities'  # float32 [B, k]
# serving_pixels (decoded pixels, for TFLite) returns every class's probability.
ALL_PROBABILITIES_OUTPUT = 'all_probabilities'  # float32 [B, num_classes]

CHECKPOINTS_PREFIX = 'finetune-'  # <checkpoint_root>/finetune-<fingerprint>/<stage>/


def stage_dir(run_uri: str, stage: str) -> str:
  return f'{run_uri.rstrip("/")}/{MODELS_DIR}/{stage}'
