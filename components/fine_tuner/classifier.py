"""The classifier of SimCLRv2's fine-tuning: the encoder, the projection head's first layer and
a new linear layer; and the SavedModel that serves it.

SimCLRv2 fine-tunes "from the first layer of the projection head": the encoder f, then the
head's first Dense -> BN -> ReLU (pretrained), then a new Dense layer with one logit per class.
Here the new layer reads that layer's output and, beside it, the encoder's served embedding
(what the linear probe reads: with embedding_stages > 1 the pooled earlier stages too), through
a fixed standardisation. It starts as the linear probe fitted on the labelled images' features
(init_from_probe: LP-FT, Kumar et al. 2022), so fine-tuning starts at the probe's answers and
its first steps do not push a random layer's errors back into the pretrained features.
A random-init twin of the same architecture is the supervised comparison; a student of the same
or another backbone is the distillation's.

The served signature takes `images` (encoded bytes, as the encoder's), runs the same TFT graph
as training, and returns the top-k `classes` (names), `class_ids` and `probabilities`, most
probable first. `serving_examples` does the same from serialized tf.Example records and
`serving_pixels` takes decoded pixels (TFLite's input) and returns `all_probabilities`.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import schemas
from components.dual_view_transform import augment, preprocessing
from components.fine_tuner import contract
from components.simclr_trainer import export, model as model_lib


LOGITS_LAYER = 'classifier_logits'  # the new layer of fine-tuning
FEATURES_LAYER = 'classifier_features'  # what it reads: [served embedding, head layer 1]
STANDARDIZE_LAYER = 'classifier_standardize'


class Standardize(layers.Layer):
  """(x - mean) / scale, with mean and scale held as non-trainable weights (so checkpoints,
  get_weights and the SavedModel carry them); the identity until init_from_probe sets them."""

  def build(self, input_shape):
    dim = int(input_shape[-1])
    self.mean = self.add_weight(name='mean', shape=(dim,), initializer='zeros', trainable=False)
    self.scale = self.add_weight(name='scale', shape=(dim,), initializer='ones', trainable=False)

  def call(self, x):
    return (x - self.mean) / self.scale


def build_classifier(backbone: str, image_size: int, width_multiplier: float, num_classes: int,
                     head_layers: int = 2, projection_dim: int = 128,
                     embedding_stages: int = 1, embedding_pool: str = 'avg'):
  """(classifier: images -> logits [B, C] in float32, encoder, projection head). The encoder and
  the whole head are returned so that pretrained weights load into them by their names; the
  classifier shares the encoder and the head's first layer. embedding_stages and
  embedding_pool: the encoder's served embedding (model.build_embedder)."""
  encoder = model_lib.build_encoder(backbone, image_size, width_multiplier)
  embedding, h = model_lib.build_embedder(encoder, backbone, embedding_stages,
                                          embedding_pool).outputs
  head = model_lib.build_projection_head(encoder.output_shape[-1], projection_dim, head_layers)
  x = h
  for name in ('head_dense1', 'head_bn1', 'head_relu1'):
    x = head.get_layer(name)(x)
  features = layers.Concatenate(name=FEATURES_LAYER, dtype='float32')([embedding, x])
  standardized = Standardize(name=STANDARDIZE_LAYER, dtype='float32')(features)
  logits = layers.Dense(num_classes, dtype='float32', name=LOGITS_LAYER)(standardized)
  return keras.Model(encoder.input, logits, name='classifier'), encoder, head


def features_model(classifier) -> keras.Model:
  """images -> the features the new layer reads (before the standardisation)."""
  return keras.Model(classifier.input, classifier.get_layer(FEATURES_LAYER).output)


def set_linear_layer(classifier, mean, scale, kernel, bias) -> None:
  """The standardisation and the new layer, from a linear model on the features: logits =
  ((features - mean) / scale) @ kernel + bias, kernel [D, num_classes]."""
  classifier.get_layer(STANDARDIZE_LAYER).set_weights(
      [np.asarray(mean, np.float32), np.asarray(scale, np.float32)])
  classifier.get_layer(LOGITS_LAYER).set_weights(
      [np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])


def load_pretrained(encoder, head, saved_model_dir: str) -> None:
  """The encoder's and the head's weights from the trainer's SavedModel (its variables are a
  checkpoint with `encoder` and `head` at the root)."""
  variables = f'{saved_model_dir.rstrip("/")}/variables/variables'
  status = tf.train.Checkpoint(encoder=encoder, head=head).read(variables)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f'cannot fine-tune {saved_model_dir}: its encoder does not match the '
                     f'architecture its Model artifact records. Detail: {str(e)[:300]}') from None
  status.expect_partial()


class ClassifierServingModule(tf.Module):

  def __init__(self, classifier, tft_output, image_size: int, class_names: Sequence[str],
               top_k: int):
    super().__init__(name='simclr_classifier')
    self.classifier = classifier
    self.tft_layer = tft_output.transform_features_layer()
    self.image_size = image_size
    self.class_names = tf.constant(list(class_names))
    self.top_k = min(top_k, len(class_names))
    self.channel_mean, self.channel_std = export.channel_statistics(self.tft_layer)
    self.serve_pixels = tf.function(
        self._serve_pixels,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                       name=export.PIXELS_INPUT)])

  def _probabilities(self, unit_images, mean, std):
    x = augment.normalize(unit_images, tf.reshape(mean, [-1, 1, 1, 3]),
                          tf.reshape(std, [-1, 1, 1, 3]))
    return tf.nn.softmax(tf.cast(self.classifier(x, training=False), tf.float32), axis=-1)

  def _serve_pixels(self, pixels):
    batch = tf.shape(pixels)[0]
    probabilities = self._probabilities(pixels / 255.0,
                                        tf.broadcast_to(self.channel_mean, [batch, 3]),
                                        tf.broadcast_to(self.channel_std, [batch, 3]))
    return {contract.ALL_PROBABILITIES_OUTPUT: probabilities}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.SERVING_INPUT)])
  def serve(self, images):
    return self._serve_bytes(images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=export.EXAMPLES_INPUT)])
  def serve_examples(self, examples):
    parsed = tf.io.parse_example(examples, {schemas.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return self._serve_bytes(parsed[schemas.IMAGE_KEY])

  def _serve_bytes(self, images):
    features = self.tft_layer(preprocessing.raw_feature_stub(export.check_request(images)))
    unit = preprocessing.to_unit_images(features[preprocessing.IMAGE], self.image_size)
    probabilities = self._probabilities(unit, features[preprocessing.CHANNEL_MEAN],
                                        features[preprocessing.CHANNEL_STD])
    top = tf.math.top_k(probabilities, k=self.top_k)
    return {contract.CLASSES_OUTPUT: tf.gather(self.class_names, top.indices),
            contract.CLASS_IDS_OUTPUT: top.indices,
            contract.PROBABILITIES_OUTPUT: top.values}
