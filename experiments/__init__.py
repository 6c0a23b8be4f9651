"""Entry points (``python -m experiments.<name>``): thin absl mains over ``bu_jax``.

Run as ``python -m``, this package is imported first, before the seconds of
imports (JAX, Flax, SciPy) that precede a main: until the main starts, Ctrl-C or
SIGTERM end the process in one ``Interrupted:`` line (nothing has been written
yet) instead of an import traceback. ``bu_jax.cli.run_app`` puts the usual
handlers back when the main starts.
"""

import os
import signal
import sys


def _stop_while_starting(signum, frame) -> None:
  del frame
  sys.stderr.write(f"Interrupted: stopped by {signal.Signals(signum).name} while starting; "
                   "nothing was written\n")
  sys.stderr.flush()
  os._exit(130)  # pylint: disable=protected-access


if sys.argv[:1] == ["-m"]:  # python -m experiments.<name>: not when a test imports it
  signal.signal(signal.SIGINT, _stop_while_starting)
  signal.signal(signal.SIGTERM, _stop_while_starting)
