"""What LinearEvaluator promises the Pusher, lineage and the report (TensorFlow-free)."""

METRICS_FILE = 'metrics.json'  # in the ModelEvaluation artifact: every number it measured
CONFUSION_PNG = 'confusion_matrix.png'
EMBEDDING_MAP_PNG = 'embedding_map.png'

# Properties of the ModelEvaluation artifact (besides each headline metric under its name).
LINEAR_TOP1 = 'linear_top1'
KNN_TOP1 = 'knn_top1'
NUM_LABELLED = 'num_labelled'
NUM_EVAL = 'num_eval'
BLESSED = 'blessed'  # 0/1, also on the ModelBlessing (TFX's own convention)
BLESSING_REASON = 'blessing_reason'
# Of the ModelBlessing.
CURRENT_MODEL = 'current_model'
CURRENT_MODEL_ID = 'current_model_id'
BASELINE_MODEL = 'baseline_model'
BASELINE_MODEL_ID = 'baseline_model_id'
REASON = 'reason'
