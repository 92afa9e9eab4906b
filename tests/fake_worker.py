"""A TEST DOUBLE of the trainer's worker program, for the local launcher's tests: no TensorFlow.
Worker 1 dies by SIGKILL; worker 0 then fails the way a real worker fails when a peer is gone
(exit code PEER_LOST_EXIT_CODE). Worker 1 leaves a marker beside the job file just before it
dies, so worker 0 never exits first, however the two are scheduled. Like a real non-chief, it
first leaves a scratch file in its temp folder."""
import json
import os
import signal
import sys
import tempfile
import time

from components.simclr_trainer import contract

if __name__ == '__main__':
  index = json.loads(os.environ['TF_CONFIG'])['task']['index']
  marker = sys.argv[1] + '.worker-1-dies'
  if index == 1:
    with tempfile.NamedTemporaryFile(prefix='scratch', delete=False) as f:
      f.write(b'a non-chief checkpoint')
    open(marker, 'w').close()
    os.kill(os.getpid(), signal.SIGKILL)
  deadline = time.time() + 60
  while not os.path.exists(marker) and time.time() < deadline:
    time.sleep(0.01)
  time.sleep(0.1)
  sys.exit(contract.PEER_LOST_EXIT_CODE)
