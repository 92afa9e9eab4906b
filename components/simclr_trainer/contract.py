"""What SimCLRTrainer promises the components and tools after it (TensorFlow-free): its files
and the properties of its Model and ModelRun artifacts."""

CHECKPOINTS_DIR = '_checkpoints'  # under the pipeline root: <fingerprint>/ per run
TIMELINE_FILE = 'timeline.json'  # in a checkpoint folder: seconds of training per checkpoint

# Properties of both the Model and the ModelRun artifacts.
RUN_FINGERPRINT = 'run_fingerprint'  # names the checkpoint folder
TRAIN_STEPS = 'train_steps'
RESUMED_FROM_STEP = 'resumed_from_step'
WARM_STARTED_FROM = 'warm_started_from'
PRECISION = 'precision'
# Of the Model: what the exported encoder is (the evaluator rebuilds a random-init twin from
# these) and what its `embedding` output reads.
BACKBONE = 'backbone'
WIDTH_MULTIPLIER = 'width_multiplier'
IMAGE_SIZE = 'image_size'
PROJECTION_DIM = 'projection_dim'
HEAD_LAYERS = 'head_layers'
EMBEDDING_DIM = 'embedding_dim'
EMBEDDING_STAGES = 'embedding_stages'
EMBEDDING_POOL = 'embedding_pool'
CONTRASTIVE_LOSS = 'contrastive_loss'
LOCAL_CROPS = 'local_crops'
MICRO_BATCH_SIZE = 'micro_batch_size'  # 0: no gradient caching
FINAL_LOSS = 'final_loss'
KNN_MONITOR_TOP1 = 'knn_monitor_top1'
# Of the ModelRun: the TensorBoard event folder, and where training ran: the number of worker
# processes and, as JSON, the job (launcher, and its processes or its cluster job's name).
TENSORBOARD_LOGDIR = 'tensorboard_logdir'
TRAINER_WORKERS = 'trainer_workers'
TRAINER_JOB = 'trainer_job'
# Files in the ModelRun folder of a run: the job every worker read, the chief's outcome and, for
# a multi-worker job on this machine, one log per worker.
JOB_FILE = 'train_job.json'
OUTCOME_FILE = 'outcome.json'
WORKER_LOG = 'worker-{index}.log'
# A worker's exit code when a collective failed because a peer went away: a consequence, not
# the cause, so the launcher names another failed worker first.
PEER_LOST_EXIT_CODE = 3
# The exported SavedModel's served signature: encoded image bytes in, embedding out (DESIGN.md).
SERVING_SIGNATURE = 'serving_default'
SERVING_INPUT = 'images'
SERVING_EMBEDDING = 'embedding'
