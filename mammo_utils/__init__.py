"""mammo_utils: the package behind the mammo-contrastive notebooks and command line.

Each stage is a function ``run_<stage>(cfg) -> Path`` that reads what the earlier stage wrote in the run
folder (``runs/<profile>-<dataset>/``) and writes its own outputs. The notebooks and the CLI call the same
functions.
"""

__version__ = "0.1.0"
