"""Command line: ``python -m mammo_utils STAGE [options]``; the same functions the notebooks call."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mammo_utils.config import DATASETS, PROFILES, TASKS, load_config
from mammo_utils.errors import MammoError

log = logging.getLogger("mammo_utils")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mammo_utils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, aliases: list[str] | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, aliases=aliases or [])
        p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: MAMMO_DATASET or synthetic)")
        p.add_argument("--profile", help=f"one of {', '.join(PROFILES)} (default: MAMMO_PROFILE or demo)")
        p.add_argument("--task", help=f"one of {', '.join(TASKS)} (default: abnormal)")
        p.add_argument("--seed", type=int)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.NAME=VALUE",
                       help="override a setting, e.g. --set pretrain.epochs=10 (repeatable)")
        return p

    p = add("prepare", "stage 01: manifest, split, preprocessed cache")
    p.add_argument("--from", dest="source", help="MIAS only: archive path or URL to download, verify and extract")
    p.add_argument("--keep-going", action="store_true", help="skip unreadable images (each one is listed)")
    p.add_argument("--force", action="store_true", help="rebuild the manifest and figures (cached images are kept)")
    p = add("pretrain", "stage 02: self-supervised pretraining (SimCLR) on regions of the breast")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="train again even if a finished run exists")
    p = add("finetune", "stage 03: whole-film classifiers from each initialisation, then the crop task")
    p.add_argument("--force", action="store_true")
    p.add_argument("--inits", help="comma-separated: simclr,random,imagenet (finetune.inits)")
    p.add_argument("--classifiers", help="the crop task's classifiers, comma-separated: linear,full; '' skips it")
    p.add_argument("--label-fractions", help="the crop task's fractions of labelled women, e.g. 0.05,0.1,0.25,1.0")
    p.add_argument("--cv", action="store_true", help="also cross-validate by patient (split.n_folds folds)")
    p = add("evaluate", "stage 04: metrics with CIs, figures, report")
    p.add_argument("--force", action="store_true")
    p.add_argument("--resamples", type=int, help="bootstrap resamples of patients (evaluate.bootstrap_resamples)")
    p = add("gradcam", "stage 05: Grad-CAM and localization scores", aliases=["explain"])
    p.add_argument("--force", action="store_true")
    add("reproduce", "run the five notebooks in order with papermill, then print the results table")
    p = add("budget", "the budget curve: the crop task's probe after 0, 250, 500, 1000, 2000 ... pretraining steps")
    p.add_argument("--steps", default="0,250,500,1000,2000", help="comma-separated pretraining steps to read")
    p = add("recipe", "the recipe search: pretraining variants scored by the crop task's probe on validation women")
    p.add_argument("--variants", help="comma-separated names of mammo_utils.pretrain.recipe.VARIANTS (default: all)")
    p = add("protocols", "stage 06: what each split protocol does to the number (A0 honest ... A5 leaks combined)")
    p.add_argument("--force", action="store_true", help="run the study again (cached features and backbones are kept)")
    p = add("publish", "copy a finished run's report.md and downscaled figures into docs/results/ (committable)")
    p.add_argument("--to", dest="dest", help="destination folder (default docs/results/<profile>-<dataset>)")
    p = add("course", "copy a finished reproduce's executed notebooks into docs/course/ (outputs kept, committable)")
    p.add_argument("--to", dest="dest", help="destination folder (default docs/course)")
    return parser


def _stage_overrides(args: argparse.Namespace) -> list[str]:
    """The finetune / evaluate options as ``SECTION.NAME=VALUE`` overrides (one way to set anything)."""
    pairs = {"inits": "finetune.inits", "classifiers": "finetune.classifiers",
             "label_fractions": "finetune.label_fractions", "resamples": "evaluate.bootstrap_resamples"}
    out = [f"{key}={getattr(args, name)}" for name, key in pairs.items() if getattr(args, name, None) is not None]
    if getattr(args, "cv", False):
        out.append("finetune.cv=true")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.profile, args.dataset, overrides=args.overrides + _stage_overrides(args),
                          task=args.task, seed=args.seed)
        if args.command == "prepare":
            from mammo_utils.prepare.stage import run_prepare

            if args.source:
                if cfg.dataset != "mias":
                    raise MammoError("--from is supported for --dataset mias only; put other datasets' files "
                                     f"in {Path(cfg.data_dir)}/<dataset>/ as data_manifests/README.md says.")
                from mammo_utils.prepare.sources.mias import fetch

                fetch(args.source, Path(cfg.data_dir), keep_going=args.keep_going)
            out = run_prepare(cfg, keep_going=args.keep_going, force=args.force)
        elif args.command == "pretrain":
            from mammo_utils.pretrain.stage import run_pretrain

            out = run_pretrain(cfg, resume=args.resume, force=args.force)
        elif args.command == "finetune":
            from mammo_utils.finetune.stage import run_finetune

            out = run_finetune(cfg, force=args.force)
        elif args.command == "evaluate":
            from mammo_utils.evaluate.stage import run_evaluate

            out = run_evaluate(cfg, force=args.force)
            print((out.parent / "report.md").read_text())
        elif args.command in ("gradcam", "explain"):
            from mammo_utils.gradcam.stage import run_gradcam

            out = run_gradcam(cfg, force=args.force)
        elif args.command == "budget":
            from mammo_utils.finetune.budget import run_budget

            out = run_budget(cfg, tuple(int(s) for s in args.steps.split(",") if s.strip()))
        elif args.command == "recipe":
            from mammo_utils.pretrain.recipe import run_recipe

            out = run_recipe(cfg, [v.strip() for v in args.variants.split(",")] if args.variants else None)
            print((out / "recipe_search.csv").read_text())
        elif args.command == "protocols":
            from mammo_utils.protocols.study import run_protocols

            out = run_protocols(cfg, force=args.force)
            print((out / "protocols.md").read_text())
        elif args.command == "publish":
            from mammo_utils.course.publish import publish_run

            out = publish_run(cfg, Path(args.dest) if args.dest else None)
        elif args.command == "course":
            from mammo_utils.course.publish import publish_course

            out = publish_course(cfg, Path(args.dest) if args.dest else None)
        else:
            from mammo_utils.course.reproduce import run_reproduce

            out = run_reproduce(cfg)
        log.info("done: %s", out)
        return 0
    except MammoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages and checkpoints are kept; run the same command again to continue "
              "(pretrain: add --resume).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
