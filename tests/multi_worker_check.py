"""Run as N processes (tests/test_multi_worker.py starts them), each with its own TF_CONFIG:
the trainer's own train step under MultiWorkerMirroredStrategy, gRPC collectives over
localhost, against one process on the same global batch.

  python tests/multi_worker_check.py INDEX PORT,PORT,... RESULT.json

Every worker builds the same reference first: the trainer's state on the default strategy, one
step on the whole global batch. It then builds the state again under the strategy with the same
initial weights, feeds its own rows of that batch, and writes the loss and the weights after the
step next to the reference's (SGD: the first step moves each weight by -lr x its gradient, so
equal weights mean equal gradients). Without cross-worker negatives or synchronised batch norm
the loss would be the `local_only_loss` it also writes.
"""
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
INDEX, PORTS, RESULT = int(sys.argv[1]), sys.argv[2].split(','), sys.argv[3]
os.environ['TF_CONFIG'] = json.dumps({
    'cluster': {'worker': [f'localhost:{port}' for port in PORTS]},
    'task': {'type': 'worker', 'index': INDEX}})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.simclr_trainer import training  # noqa: E402
from components.simclr_trainer.params import TrainerParams  # noqa: E402

# The strategy first: collective ops are configured before TensorFlow runs anything.
strategy = training.choose_strategy('auto')
workers = strategy.num_replicas_in_sync
PARAMS = TrainerParams(backbone='resnet_small', width_multiplier=0.25, batch_size=8 * workers,
                       optimizer='sgd', learning_rate=0.5, warmup_fraction=0.0,
                       weight_decay=0.0, projection_dim=16)
SIZE = 16
rng = np.random.default_rng(0)  # the same global batch on every worker
view_a = rng.normal(size=(PARAMS.batch_size, SIZE, SIZE, 3)).astype(np.float32)
view_b = (view_a + 0.3 * rng.normal(size=view_a.shape)).astype(np.float32)


def one_step(state, views):
  loss = state.train_step(views)[0]
  return float(loss), [v.numpy() for v in state.variables]


keras.utils.set_random_seed(0)
single = training.build_training_state(PARAMS, SIZE, 10, strategy=tf.distribute.get_strategy())
initial = [v.numpy() for v in single.variables]
weights = single.encoder.get_weights(), single.head.get_weights()
single_loss, single_after = one_step(single, (tf.constant(view_a), tf.constant(view_b)))

# Each half alone through a fresh copy: its own negatives and its own batch statistics only.
local_losses = []
for part in np.array_split(np.arange(PARAMS.batch_size), workers):
  alone = training.build_training_state(PARAMS, SIZE, 10, strategy=tf.distribute.get_strategy())
  alone.encoder.set_weights(weights[0])
  alone.head.set_weights(weights[1])
  local_losses.append(one_step(alone, (tf.constant(view_a[part]), tf.constant(view_b[part])))[0])

distributed = training.build_training_state(PARAMS, SIZE, 10, strategy=strategy)
distributed.encoder.set_weights(weights[0])
distributed.head.set_weights(weights[1])
rows = PARAMS.batch_size // workers
mine = lambda array: strategy.experimental_distribute_values_from_function(
    lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * rows:
                                  (ctx.replica_id_in_sync_group + 1) * rows]))
dist_loss, dist_after = one_step(distributed, (mine(view_a), mine(view_b)))

moved = [np.abs(a - b).max() for a, b in zip(single_after, initial)]
diff = [np.abs(a - b).max() for a, b in zip(dist_after, single_after)]
with open(RESULT, 'w', encoding='utf-8') as f:
  json.dump({
      'index': INDEX, 'workers': workers,
      'multi_worker': isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
      'single_loss': single_loss, 'distributed_loss': dist_loss,
      'local_only_loss': float(np.mean(local_losses)),
      'update_max_abs': float(max(moved)), 'update_max_abs_diff': float(max(diff)),
      'sync_bn_layers': sum(1 for layer in distributed.encoder.layers + distributed.head.layers
                            if getattr(layer, 'synchronized', False)),
  }, f)
