"""Lightning callbacks, one per file. Configs name them by this package's path, e.g.
``aspp_seg.training.callbacks.EMA``.

- `EMA` (ema.py): an average of the weights, used for every evaluation;
- `ModelCheckpoint` (checkpoint.py): Lightning's, with ``last.ckpt`` always the newest;
- `RunGuard` (run_guard.py): stops a diverging run, refuses non-finite checkpoints;
- `Preemption` (preemption.py): SIGTERM / SIGUSR1 stop a run at the next step with
  ``last.ckpt`` written for it;
- `RunEstimate` (run_estimate.py): one line saying how long the rest of a fit takes,
  once its step and validation times are measured;
- `ClassWeights` (class_weights.py): class weights from the split the run trains on;
- `FastPaths` (fast_paths.py): SyncBatchNorm, channels_last, compile, fused optimizer,
  gradient checkpointing;
- `LRScaling` (lr_scaling.py): the LR follows the global batch;
- `ScheduleRetarget` (schedule_retarget.py): the LR schedule follows a run's length
  across resumes;
- `LoggedStepAlignment` (logged_step_alignment.py): a resumed run logs at the step its
  checkpoint reached;
- `RunConfigCallback` (run_config.py): the run's config.yaml, W&B config and run id;
- `ResultFiles` (result_files.py): per-class IoU tables in the run folder;
- `SegmentationLogger` (segmentation_logger.py): tables, confusion and overlays for
  W&B / TensorBoard / files;
- `PredictionWriter` (prediction_writer.py): ``aspp-seg predict``'s files.

``aspp-seg`` adds `FastPaths`, `LRScaling` (settings: the config's top-level
``fast_paths:`` and ``lr_scaling:``), `RunGuard`, `Preemption`, `ClassWeights`, `ScheduleRetarget`,
`RunEstimate`,
`LoggedStepAlignment`, `ResultFiles` and, for ``predict``, a `PredictionWriter` to every run
(`aspp_seg.cli.lightning_cli`); plain Python lists the ones it wants in
``Trainer(callbacks=[...])``.
"""

from aspp_seg.training.callbacks.checkpoint import ModelCheckpoint
from aspp_seg.training.callbacks.class_weights import ClassWeights
from aspp_seg.training.callbacks.ema import EMA
from aspp_seg.training.callbacks.fast_paths import FastPaths
from aspp_seg.training.callbacks.logged_step_alignment import LoggedStepAlignment
from aspp_seg.training.callbacks.lr_scaling import LRScaling
from aspp_seg.training.callbacks.prediction_writer import PredictionWriter
from aspp_seg.training.callbacks.preemption import Preemption
from aspp_seg.training.callbacks.result_files import ResultFiles
from aspp_seg.training.callbacks.run_config import RunConfigCallback
from aspp_seg.training.callbacks.run_estimate import RunEstimate
from aspp_seg.training.callbacks.run_guard import RunGuard
from aspp_seg.training.callbacks.schedule_retarget import ScheduleRetarget
from aspp_seg.training.callbacks.segmentation_logger import SegmentationLogger

__all__ = [
    "EMA",
    "ClassWeights",
    "FastPaths",
    "LRScaling",
    "LoggedStepAlignment",
    "ModelCheckpoint",
    "PredictionWriter",
    "Preemption",
    "ResultFiles",
    "RunConfigCallback",
    "RunEstimate",
    "RunGuard",
    "ScheduleRetarget",
    "SegmentationLogger",
]
