"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR (Chen et al. 2020).

For N images with projections z_a (view 1) and z_b (view 2), each of the 2N samples is an anchor
whose positive is the other view of the same image and whose negatives are the remaining 2N-2
samples. The loss is the mean over all 2N anchors of

    -log( exp(sim(i, pos) / t) / sum_{k != i} exp(sim(i, k) / t) )

with sim the cosine similarity. The decoupled form (DCL, Yeh et al. 2022) drops the positive
from the denominator, sum_{k != i, pos}: with it there, an easy positive shrinks every negative's
gradient, which slows learning most at small batches and early in training.

Under tf.distribute, negatives come from every replica: each
replica's anchors see the global batch, and the value returned on a replica is the mean over its
own 2N anchors, so the strategy's MEAN reduction of it is the global-batch loss.
"""
from __future__ import annotations

import tensorflow as tf

_LARGE = 1e9


def _cross_replica_concat(tensor: tf.Tensor, ctx: tf.distribute.ReplicaContext) -> tf.Tensor:
  """Concatenates `tensor` over replicas in replica order, differentiably (all-reduce SUM)."""
  num = ctx.num_replicas_in_sync
  replica_id = ctx.replica_id_in_sync_group
  scattered = tf.scatter_nd(indices=[[replica_id]], updates=[tensor],
                            shape=tf.concat([[num], tf.shape(tensor)], axis=0))
  gathered = ctx.all_reduce(tf.distribute.ReduceOp.SUM, scattered)
  return tf.reshape(gathered, tf.concat([[-1], tf.shape(tensor)[1:]], axis=0))


CONTRASTIVE_LOSSES = ('nt_xent', 'dcl')


def nt_xent_loss(z_a: tf.Tensor, z_b: tf.Tensor, temperature: float,
                 negatives: tf.Tensor | None = None, decoupled: bool = False) -> tf.Tensor:
  """Mean NT-Xent loss over all 2N anchors. z_a, z_b: [N, d]. Computed in float32.

  `negatives` ([Q, d], optional) are extra negatives for every anchor, e.g. a MoCo-style queue
  of projections from earlier steps; they receive no gradient. `decoupled`: the DCL form, with
  the positive left out of the denominator.
  """
  z_a = tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1)
  z_b = tf.math.l2_normalize(tf.cast(z_b, tf.float32), axis=1)
  n = tf.shape(z_a)[0]

  ctx = tf.distribute.get_replica_context()
  if ctx is not None and ctx.num_replicas_in_sync > 1:
    all_a, all_b = _cross_replica_concat(z_a, ctx), _cross_replica_concat(z_b, ctx)
    offset = ctx.replica_id_in_sync_group * n
  else:
    all_a, all_b, offset = z_a, z_b, 0
  total = tf.shape(all_a)[0]

  positives = offset + tf.range(n)  # index of each anchor's own image in the gathered batch
  self_mask = tf.one_hot(positives, total)  # masks sim(i, i) before the softmax
  inv_t = 1.0 / tf.cast(temperature, tf.float32)
  logits_aa = tf.matmul(z_a, all_a, transpose_b=True) * inv_t - self_mask * _LARGE
  logits_bb = tf.matmul(z_b, all_b, transpose_b=True) * inv_t - self_mask * _LARGE
  logits_ab = tf.matmul(z_a, all_b, transpose_b=True) * inv_t
  logits_ba = tf.matmul(z_b, all_a, transpose_b=True) * inv_t

  blocks_a, blocks_b = [logits_ab, logits_aa], [logits_ba, logits_bb]
  width = 2 * total
  if negatives is not None:
    queue = tf.stop_gradient(tf.math.l2_normalize(tf.cast(negatives, tf.float32), axis=1))
    blocks_a.append(tf.matmul(z_a, queue, transpose_b=True) * inv_t)
    blocks_b.append(tf.matmul(z_b, queue, transpose_b=True) * inv_t)
    width += tf.shape(queue)[0]
  labels = tf.one_hot(positives, width)  # positive sits in the first (cross-view) block

  def anchor_losses(logits):
    if decoupled:  # -sim(i, pos)/t + log sum over the negatives alone
      return (tf.reduce_logsumexp(logits - labels * _LARGE, axis=1)
              - tf.reduce_sum(labels * logits, axis=1))
    return tf.nn.softmax_cross_entropy_with_logits(labels, logits)

  return tf.reduce_mean(tf.concat([anchor_losses(tf.concat(blocks_a, 1)),
                                   anchor_losses(tf.concat(blocks_b, 1))], axis=0))


def multi_crop_loss(z_a: tf.Tensor, z_b: tf.Tensor, z_local: tf.Tensor, count: int,
                    temperature: float, decoupled: bool = False) -> tf.Tensor:
  """Multi-crop NT-Xent (SwAV's multi-crop, Caron et al. 2020, for a contrastive loss).

  z_local: [count * N, d], the projections of `count` small crops of each of the N images,
  crop j in rows j*N .. (j+1)*N - 1. Every crop is paired with both views: the loss is the
  mean of nt_xent_loss over the 1 + 2*count pairs (a, b), (a, crop j), (b, crop j), so each
  pair keeps SimCLR's 2N-2 in-batch negatives. Small crops are never paired with each other,
  as in SwAV: two small crops may not share any content.
  """
  pairs = [nt_xent_loss(z_a, z_b, temperature, decoupled=decoupled)]
  for crop in tf.split(z_local, count, axis=0):
    pairs.append(nt_xent_loss(z_a, crop, temperature, decoupled=decoupled))
    pairs.append(nt_xent_loss(z_b, crop, temperature, decoupled=decoupled))
  return tf.add_n(pairs) / len(pairs)


def contrastive_accuracy(z_a: tf.Tensor, z_b: tf.Tensor) -> tf.Tensor:
  """Share of view-a anchors whose most similar view-b sample is their own positive (local)."""
  z_a = tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1)
  z_b = tf.math.l2_normalize(tf.cast(z_b, tf.float32), axis=1)
  sim = tf.matmul(z_a, z_b, transpose_b=True)
  hits = tf.equal(tf.argmax(sim, axis=1, output_type=tf.int32), tf.range(tf.shape(z_a)[0]))
  return tf.reduce_mean(tf.cast(hits, tf.float32))
