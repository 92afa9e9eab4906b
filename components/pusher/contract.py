"""What the Pusher promises TF Serving, lineage and the tools (TensorFlow-free): the files it
writes in the serving folder and the properties of its PushedModel artifact."""
import os

MODELS_CONFIG = 'models.config'  # <serving_dir>/models.config, TF Serving's --model_config_file
EDGE_DIR = 'tflite'  # <version>/tflite/: the accepted TFLite files travel with the version
SOURCE_FILE = os.path.join('assets.extra', 'simclr_tfx_source.json')  # which Model, which run
WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
LOCK_FILE = '.simclr-tfx-serving.lock'  # in <serving_dir>: orders the commits of pushes
LAST_VERSION_FILE = '.simclr-tfx-last-version'  # in <serving_dir>/<model>: never reuse a number

# Properties of the PushedModel artifact (pushed and pushed_destination are TFX's own names).
PUSHED = 'pushed'  # 0/1
PUSHED_DESTINATION = 'pushed_destination'
PUSHED_VERSION = 'pushed_version'
MODEL_NAME = 'model_name'
MODELS_CONFIG_PATH = 'models_config'
RETIRED_VERSIONS = 'retired_versions'
EDGE_MODELS = 'edge_models'
WARMUP = 'warmup'
REASON = 'reason'
KIND = 'kind'  # encoder | classifier
# Of a classifier's push: the encoder version it was fine-tuned from (-1: that encoder was not
# pushed), and that encoder's Model.
ENCODER_VERSION = 'encoder_version'
ENCODER_MODEL_URI = 'encoder_model_uri'
