"""The three profiles, ``smoke`` (tests and CI: seconds), ``demo`` (a laptop CPU: minutes) and ``full`` (a GPU:
the paper-scale run), as the settings each one changes from the defaults of :mod:`mammo_utils.config`.

Sizes, epochs and steps are set by time budgets and stated assumptions, never by a result on test data; the one
choice made on results is marked where it is made (on validation data).
"""

from __future__ import annotations

from typing import Any

from mammo_utils.prepare.sources import dataset_info


def profile_values(profile: str, dataset: str) -> dict[str, Any]:
    """The settings ``profile`` changes on ``dataset``: top-level values, and for a section a dict of its fields
    (e.g. ``{"image_size_px": 128, "pretrain": {"epochs": 6}}``); every other setting keeps its default."""
    # demo is 128 px on every dataset: on a 2-core CPU a 224 px fine-tuning of MIAS takes ~3 min, and the
    # demo's 5-fold CV of two tasks from two inits is 20 of them (plus the sweep) within 45 minutes.
    size = {"smoke": 64, "demo": 128, "full": 512}[profile]
    # Small datasets without an official test split are cross-validated by patient (5 folds on MIAS), in
    # every profile, so that the smoke run in CI goes through the same code as the published numbers.
    cv = dataset_info(dataset).cross_validate
    if profile == "smoke":
        return dict(
            image_size_px=size,
            synthetic=dict(n_patients=16, size_px=128),
            pretrain=dict(epochs=1, batch_size=16, limit_batches=2, hidden_dim=256, output_dim=64),
            finetune=dict(epochs=1, batch_size=16, limit_batches=2, label_fractions=(0.5, 1.0),
                                    linear_epochs=20, cv=cv),
            evaluate=dict(bootstrap_resamples=200),
            gradcam=dict(n_images=4),
            # The protocol study in CI's seconds: two seeds, K = 1 and 2, 32 px patches, no per-fold pretraining
            # of its own (the patch SimCLR rows are left out, with the reason), one tiny CNN per arm.
            protocols=dict(enabled=cv, seeds=2, copies=(1, 2), patch_size_px=32, patches_per_site=3,
                                      lr_iterations=(5, 20, 100), a4_configs=6, pretrain_folds=False,
                                      patch_pretrain_epochs=1, cnn_seeds=1, cnn_steps=2, cnn_checks=1,
                                      cnn_size_px=32, cnn_copies=2),
        )
    if profile == "demo":
        # Sizes, epochs and steps are set by the time budget, never by a result: `make demo` within 10 minutes and
        # the MIAS reproduction (5-fold CV of two tasks, a SimCLR backbone per fold) within 45 on 2 cores with bf16.
        # With 10 epochs each and 40 sweep steps they took 17 and 68 min; 6 epochs, 20 sweep steps and 4 Grad-CAM
        # images, 11 and 31 min; 6 SimCLR epochs, 5 fine-tuning epochs, 12 sweep steps and 2 Grad-CAM images
        # bring them to the README's "Speed". The one choice made on results, the backbone's learning rate in full fine-tuning, was made on
        # validation ROC AUC (the best epoch's, as KeepBestWeights keeps it) of the synthetic demo's
        # SimCLR-initialised headline run, with 10 epochs: backbone_lr_factor 1.0 (every layer at one rate, as
        # SimCLR's own fine-tuning protocol does) 0.963, against 0.823 with 0.1 (the factor does not apply to
        # random init, 0.964).
        return dict(
            image_size_px=size,
            pretrain=dict(epochs=6, batch_size=32),
            # ImageNet is tried and, when its weights are not in the local torch cache, skipped with a message.
            # Every point of the label-efficiency sweep takes the same 12 optimisation steps (sweep_steps).
            finetune=dict(epochs=5, backbone_lr_factor=1.0, inits=("simclr", "random", "imagenet"),
                                    cv=cv, sweep_steps=12,
                                    # The synthetic task is not the paper's: no second task beside its claim.
                                    tasks=() if dataset == "synthetic" else ("abnormal", "malignant")),
            # The protocol study (about 30 minutes more on 2 cores on MIAS) runs on its own (`make protocols`),
            # which keeps `reproduce` within its 45 minutes; --set protocols.enabled=true adds notebook 06 to it.
            protocols=dict(enabled=False),
            gradcam=dict(n_images=2),
        )
    # full: the GPU configuration. The paper states neither resolution nor schedule; these are assumptions,
    # chosen as lightly's ImageNet ResNet-50 SimCLR benchmark does (LARS, warm-up, cosine, batch 256).
    return dict(
        image_size_px=size,
        num_workers=8,
        synthetic=dict(n_patients=500, size_px=768),
        pretrain=dict(
            # lr is the base rate of SimCLR's linear rule, 0.3 x batch / 256 (Chen et al. 2020, App. B.1), so
            # 0.3 at batch 256 on one GPU and 4.8 at SimCLR's 4096; temperature 0.2 as lightly's benchmarks.
            epochs=200, batch_size=256, optimizer="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10
        ),
        finetune=dict(epochs=50, batch_size=64, inits=("simclr", "random", "imagenet"), cv=cv),
        evaluate=dict(bootstrap_resamples=2000),
        gradcam=dict(n_images=32),
        protocols=dict(enabled=cv, seeds=10, patch_size_px=128, patch_pretrain_epochs=100, cnn_seeds=10,
                                  cnn_steps=1000, cnn_checks=20, cnn_size_px=256, cnn_inits=("simclr", "random")),
    )
