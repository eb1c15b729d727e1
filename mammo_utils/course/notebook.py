"""Small conveniences for the notebooks: logging, and a one-line summary of the run's settings."""

from __future__ import annotations

import logging

from mammo_utils.config import Config
from mammo_utils.runs.paths import run_dir


def setup_notebook(cfg: Config) -> Config:
    """Show the package's log messages in the notebook and print which run this is; returns ``cfg``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _short_errors()
    print(f"profile={cfg.profile} dataset={cfg.dataset} task={cfg.task} seed={cfg.seed} "
          f"image_size_px={cfg.image_size_px}\nrun folder: {run_dir(cfg)}")
    return cfg


def _short_errors() -> None:
    """Show the package's own errors as their one-line message instead of a long traceback."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(self, etype, value, tb, tb_offset=None):
        self._showtraceback(etype, value, [f"{etype.__name__}: {value}"])

    from mammo_utils.errors import MammoError

    shell.set_custom_exc((MammoError,), handler)


KERNEL_NAME = "mammo-contrastive"  # the notebooks' kernelspec; `make lab` registers it in .venv


def ensure_kernel() -> str:
    """Register this Python environment as the Jupyter kernel ``mammo-contrastive`` unless it already is;
    returns the kernel's name. ``make lab`` and ``make test`` do it through the Makefile; ``reproduce`` calls
    this so that a conda environment without the Makefile works too."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and spec.argv[0] == sys.executable:
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name=f"Python ({KERNEL_NAME})", prefix=sys.prefix)
    return KERNEL_NAME
