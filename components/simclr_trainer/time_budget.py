"""The pretraining time budget (train_minutes) as one object: plan, re-plan, stop.

TensorFlow-free. With a budget, the trainer measures its pace over PACE_STEPS steps (after
the first PACE_FROM_STEP, which trace the step and fill the input caches) and fixes the step
count, and the learning-rate schedule's warmup and decay, to what fits, at most the configured
epochs. It plans once more from the pace of the next REPLAN_STEPS steps, while the rate is still
near its peak: the first steps run slower than the rest (the shuffle buffer and the cache
filling), and a plan from them alone leaves minutes of the budget unused. A slower stretch
after that (a busy machine) stops training at the budget, as promised, with the schedule not
yet at 0. The plan is saved with the checkpoints' timeline, so a resumed run keeps it.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional

PACE_FROM_STEP, PACE_STEPS, REPLAN_STEPS = 3, 20, 100
MARGIN = 0.95  # of the seconds left, spent on steps; the rest is for checkpoints and monitors


def steps_within_budget(done: int, planned_total: int, seconds_left: float,
                        seconds_per_step: float, margin: float = MARGIN) -> int:
  """A time budget's step count: the steps done plus what `margin` of the seconds left buys at
  the measured pace, capped by the epochs' `planned_total`, and at least one more step."""
  affordable = int(max(seconds_left, 0.0) * margin / max(seconds_per_step, 1e-9))
  return max(done + 1, min(planned_total, done + affordable))


class TimeBudget:
  """Decides the step count of a run. Without a budget (minutes 0) it is the configured count.

  Call after_step(done) after every step: it returns True when it has just (re)planned, and the
  caller then applies total_steps and warmup_steps to the schedule and saves plan(). Call
  out_of_time(done) to know whether to stop there."""

  def __init__(self, minutes: float, max_steps: int, warmup_fraction: float, start_step: int,
               seconds_before: float = 0.0, saved_plan: Optional[Dict[str, float]] = None,
               clock: Callable[[], float] = time.monotonic):
    self.seconds = float(minutes) * 60
    self.max_steps = max_steps  # the configured epochs: no plan goes beyond them
    self._warmup_fraction = warmup_fraction
    self._clock = clock
    self._started, self._before = clock(), seconds_before
    self.total_steps = max_steps
    self.warmup_steps = float(round(warmup_fraction * max_steps))
    self._plan_at = self._replan_at = self._pace_started = None
    self._pace_from = start_step + PACE_FROM_STEP
    if self.seconds and saved_plan:  # a resumed time-budget run keeps its plan
      self.total_steps = int(saved_plan['planned_steps'])
      self.warmup_steps = float(saved_plan['planned_warmup_steps'])
    elif self.seconds:
      self._plan_at = self._pace_from + PACE_STEPS
      self._replan_at = self._plan_at + REPLAN_STEPS

  def spent(self) -> float:
    """Seconds of training so far, those of earlier attempts (a resume) included."""
    return self._before + self._clock() - self._started

  def after_step(self, done: int) -> bool:
    if done == self._pace_from:
      self._pace_started = self._clock()
    if done not in (self._plan_at, self._replan_at) or done >= self.total_steps:
      return False
    paced = PACE_STEPS if done == self._plan_at else REPLAN_STEPS
    self.seconds_per_step = (self._clock() - self._pace_started) / paced
    self.total_steps = steps_within_budget(done, self.max_steps, self.seconds - self.spent(),
                                           self.seconds_per_step)
    self.warmup_steps = float(round(self._warmup_fraction * self.total_steps))
    self.paced_steps = paced
    self._pace_started = self._clock()  # the re-plan's window starts here
    return True

  def out_of_time(self, done: int) -> bool:
    """True when the budget is spent before the planned steps: training stops at `done`."""
    if self.seconds and self.spent() >= self.seconds and done < self.total_steps:
      self.total_steps = done
      return True
    return False

  def plan(self) -> Dict[str, float]:
    return {'planned_steps': self.total_steps, 'planned_warmup_steps': self.warmup_steps}
