"""What DualViewTransform promises the trainer, the exporter and the report (TensorFlow-free)."""

POLICY_FILE = 'policy.json'  # in the TransformGraph artifact: the augmentation policy
PREVIEW_FILE = 'preview.png'  # originals and their two views, for a person to look at

# Properties of the TransformGraph artifact.
AUGMENTATION_POLICY = 'augmentation_policy'  # the policy, JSON
IMAGE_SIZE = 'image_size'
CHANNEL_MEAN = 'channel_mean'  # JSON list, per channel, of the training images
CHANNEL_STD = 'channel_std'
