"""A TEST DOUBLE of the trainer's worker program, for the local launcher's tests: no TensorFlow.
Worker 1 dies by SIGKILL at once; worker 0 then fails the way a real worker fails when a peer
is gone (exit code PEER_LOST_EXIT_CODE)."""
import json
import os
import signal
import sys
import time

from components.simclr_trainer import contract

if __name__ == '__main__':
  index = json.loads(os.environ['TF_CONFIG'])['task']['index']
  if index == 1:
    os.kill(os.getpid(), signal.SIGKILL)
  time.sleep(0.3)
  sys.exit(contract.PEER_LOST_EXIT_CODE)
