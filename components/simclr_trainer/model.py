"""Encoder f (ResNet) and projection head g of SimCLR, as Keras models.

The encoder maps a normalised image batch [B, S, S, 3] to h [B, D] (global average pool of the
last stage). The embedder reads the same network for the probe and the serving signature's
`embedding`: h itself (embedding_stages=1, SimCLR's protocol) or the global average pools (and
with pool='avg_max' the global max pools) of the last few stages side by side (build_embedder).
The head maps h to z [B, projection_dim] (an MLP with batch norm, as in the paper); only the
loss sees z.
"""
from __future__ import annotations

import keras
from keras import layers

# (block kind, blocks per stage, base channels per stage). Bottleneck stages output 4x.
_ARCHS = {
    # The small default: one basic block per stage, 3 stages; fast enough for a CPU demo.
    'resnet_small': ('basic', (1, 1, 1), (32, 64, 128)),
    'resnet18': ('basic', (2, 2, 2, 2), (64, 128, 256, 512)),
    'resnet34': ('basic', (3, 4, 6, 3), (64, 128, 256, 512)),
    'resnet50': ('bottleneck', (3, 4, 6, 3), (64, 128, 256, 512)),
}
BACKBONES = tuple(_ARCHS)



def _bn_factory(sync: bool):
  """Batch norm layers; `sync` = global (cross-replica) statistics, as SimCLR uses on several
  replicas (per-replica statistics let the network cheat the contrastive task)."""
  def bn(name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, synchronized=sync)
  return bn


def _basic_block(x, channels: int, stride: int, name: str, bn):
  shortcut = x
  if stride != 1 or x.shape[-1] != channels:
    shortcut = layers.Conv2D(channels, 1, stride, use_bias=False, name=f'{name}_proj')(x)
    shortcut = bn(f'{name}_proj_bn')(shortcut)
  y = layers.Conv2D(channels, 3, stride, padding='same', use_bias=False, name=f'{name}_conv1')(x)
  y = bn(f'{name}_bn1')(y)
  y = layers.ReLU(name=f'{name}_relu1')(y)
  y = layers.Conv2D(channels, 3, 1, padding='same', use_bias=False, name=f'{name}_conv2')(y)
  y = bn(f'{name}_bn2')(y)
  y = layers.Add(name=f'{name}_add')([shortcut, y])
  return layers.ReLU(name=f'{name}_out')(y)


def _bottleneck_block(x, channels: int, stride: int, name: str, bn):
  out_channels = 4 * channels
  shortcut = x
  if stride != 1 or x.shape[-1] != out_channels:
    shortcut = layers.Conv2D(out_channels, 1, stride, use_bias=False, name=f'{name}_proj')(x)
    shortcut = bn(f'{name}_proj_bn')(shortcut)
  y = layers.Conv2D(channels, 1, 1, use_bias=False, name=f'{name}_conv1')(x)
  y = layers.ReLU(name=f'{name}_relu1')(bn(f'{name}_bn1')(y))
  y = layers.Conv2D(channels, 3, stride, padding='same', use_bias=False, name=f'{name}_conv2')(y)
  y = layers.ReLU(name=f'{name}_relu2')(bn(f'{name}_bn2')(y))
  y = layers.Conv2D(out_channels, 1, 1, use_bias=False, name=f'{name}_conv3')(y)
  y = bn(f'{name}_bn3')(y)
  y = layers.Add(name=f'{name}_add')([shortcut, y])
  return layers.ReLU(name=f'{name}_out')(y)


def build_encoder(backbone: str, image_size: int, width_multiplier: float = 1.0,
                  cifar_stem: bool | None = None, sync_batch_norm: bool = False,
                  any_input_size: bool = False) -> keras.Model:
  """ResNet v1 (basic blocks for 18/34 and the small default, bottlenecks for 50). The CIFAR
  stem (3x3 stride 1, no max-pool) is used for images of 64 px and below unless `cifar_stem`
  says otherwise. `sync_batch_norm` computes BN statistics over all replicas. any_input_size:
  square inputs of any side (training on crops smaller than image_size); the weights are the
  same as those of the fixed-size model."""
  if backbone not in _ARCHS:
    raise ValueError(f'unknown backbone {backbone!r}; choose from {sorted(_ARCHS)}')
  bn = _bn_factory(sync_batch_norm)
  kind, blocks, channels = _ARCHS[backbone]
  block_fn = _basic_block if kind == 'basic' else _bottleneck_block
  channels = [max(8, int(round(c * width_multiplier))) for c in channels]
  if cifar_stem is None:
    cifar_stem = image_size <= 64
  side = None if any_input_size else image_size
  inputs = keras.Input((side, side, 3), name='image')
  if cifar_stem:
    x = layers.Conv2D(channels[0], 3, 1, padding='same', use_bias=False, name='stem_conv')(inputs)
  else:
    x = layers.Conv2D(channels[0], 7, 2, padding='same', use_bias=False, name='stem_conv')(inputs)
  x = bn('stem_bn')(x)
  x = layers.ReLU(name='stem_relu')(x)
  if not cifar_stem:
    x = layers.MaxPool2D(3, 2, padding='same', name='stem_pool')(x)
  for stage, (count, width) in enumerate(zip(blocks, channels)):
    for block in range(count):
      stride = 2 if (stage > 0 and block == 0) else 1
      x = block_fn(x, width, stride, name=f's{stage + 1}b{block + 1}', bn=bn)
  # float32 output under mixed precision: the embedding is what users and the probe read.
  h = layers.GlobalAveragePooling2D(name='embedding', dtype='float32')(x)
  return keras.Model(inputs, h, name=f'encoder_{backbone}')


def stage_count(backbone: str) -> int:
  return len(_ARCHS[backbone][1])


POOLS = ('avg', 'avg_max')


def build_embedder(encoder: keras.Model, backbone: str, embedding_stages: int = 1,
                   pool: str = 'avg') -> keras.Model:
  """encoder input -> [embedding, h]: h feeds the projection head; the embedding is what the
  probe, kNN and serving read. embedding_stages=k reads the last k stages' outputs (k=1: the
  last stage only); pool='avg' takes each one's global average pool (k=1: the embedding is h),
  'avg_max' also its global max pool (all average pools first, then all max pools). The
  embedding has as many numbers as the chosen stages have output channels, twice that with
  'avg_max': the cifar preset (resnet18 at width 0.5, k=4, avg_max) reads 32+64+128+256 = 480
  average and 480 max pools, 960 numbers, where h is 256. Why: a short pretraining leaves the
  later stages least trained, and the earlier stages' pooled features still separate classes;
  a max pool keeps a feature that fires in one small spot, which an average dilutes. Both
  pools ignore where in the frame a feature fires. No new weights, so changing either reuses
  the checkpoints. What the cifar preset's choice rests on: docs/benchmarks.md."""
  stages = stage_count(backbone)
  if not 1 <= embedding_stages <= stages:
    raise ValueError(f'embedding_stages must be 1..{stages} for {backbone}, got {embedding_stages}')
  if pool not in POOLS:
    raise ValueError(f'embedding pool must be one of {POOLS}, got {pool!r}')
  h = encoder.output
  if embedding_stages == 1 and pool == 'avg':
    return keras.Model(encoder.input, [h, h], name='embedder')
  blocks = _ARCHS[backbone][1]
  chosen = range(stages - embedding_stages, stages)
  maps = {s: encoder.get_layer(f's{s + 1}b{blocks[s]}_out').output for s in chosen}
  # The last stage's average pool is h itself (the encoder's own output layer).
  pools = [layers.GlobalAveragePooling2D(name=f'embedding_s{s + 1}', dtype='float32')(maps[s])
           for s in chosen[:-1]] + [h]
  if pool == 'avg_max':
    pools += [layers.GlobalMaxPooling2D(name=f'embedding_max_s{s + 1}', dtype='float32')(maps[s])
              for s in chosen]
  embedding = layers.Concatenate(name='embedding_stages', dtype='float32')(pools)
  return keras.Model(encoder.input, [embedding, h], name='embedder')


def build_projection_head(input_dim: int, projection_dim: int, num_layers: int = 2,
                          sync_batch_norm: bool = False) -> keras.Model:
  """SimCLR's MLP head: (Dense -> BN -> ReLU) x (num_layers-1), then Dense -> BN (no bias)."""
  bn = _bn_factory(sync_batch_norm)
  inputs = keras.Input((input_dim,), name='h')
  x = inputs
  for i in range(num_layers - 1):
    x = layers.Dense(input_dim, use_bias=False, name=f'head_dense{i + 1}')(x)
    x = bn(f'head_bn{i + 1}')(x)
    x = layers.ReLU(name=f'head_relu{i + 1}')(x)
  x = layers.Dense(projection_dim, use_bias=False, name='head_out')(x)
  z = layers.Activation('linear', dtype='float32', name='z')(bn('head_out_bn')(x))
  return keras.Model(inputs, z, name='projection_head')
