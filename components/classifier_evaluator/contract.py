"""What ClassifierEvaluator promises the Pusher, lineage and the report (TensorFlow-free). The
blessing's properties and BLESSED / NOT_BLESSED file are LinearEvaluator's (its contract.py),
so one Pusher reads both."""

METRICS_FILE = 'metrics.json'  # in the ModelEvaluation artifact
CONFUSION_PNG = 'classifier_confusion_matrix.png'  # of the served classifier
# The four models compared on the same eval images, trained on the same labels.
MODELS = ('linear_probe', 'finetuned', 'distilled', 'supervised')
SERVED_MODEL = 'served_model'  # property: which of MODELS the classifier is


def top1(model: str) -> str:
  """Float property of the ModelEvaluation: that model's top-1 on the eval images."""
  return f'{model}_top1'


def ece(model: str) -> str:
  """Float property: that model's expected calibration error."""
  return f'{model}_ece'
