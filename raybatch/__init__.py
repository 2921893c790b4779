"""``import raybatch``: raybatch's Python API under the name it is installed and run by.

The code lives in the ``runner`` package; this is the same public surface, so
``raybatch.plan``, ``raybatch.run``, ``raybatch.ManifestError``, ... are ``runner``'s.
"""

from runner import *  # noqa: F403
from runner import __all__, __version__  # noqa: F401
