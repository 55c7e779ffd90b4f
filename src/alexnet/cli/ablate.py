"""``alexnet ablate``: the paper's ablations trained side by side over seeds, and their table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from alexnet.cli.help import ShowDefaults
from alexnet.data.sources import SPEC_HELP
from alexnet.runtime import DEVICE_HELP
from alexnet.tools.ablate import STUDIES, TARGET_ERROR
from alexnet.training.config import preset_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="train ablation variants side by side over seeds; mean ± std errors, paired 95 %% intervals",
        description="Train the variants of a study (the preset as it is, and the preset with one thing changed) "
                    "with everything else identical, over --seeds seeds, each in OUT/VARIANT/seedN, then write "
                    "OUT/ablation.md, ablation.json, ablation.png and ablation-STUDY.png per study: mean ± std of the final "
                    "top-1/top-5 error, the difference from the baseline paired by seed with its 95 % t interval, how much "
                    "the curves still moved over the last quarter of the epochs, the total cost (and, for relu-tanh, "
                    "the epochs and seconds to reach --target-error training error, to a tenth of an epoch, and a figure of "
                    "the training error by tenth: Fig. 1's race; the paper ran it with no regularisation: --set "
                    "model.options.dropout=0.0 --set optim.weight_decay=0.0). Use 5 seeds or more and "
                    "enough --epochs for the baseline's curve to be flat. "
                    "Rerunning resumes: finished runs are not trained again, interrupted ones continue.",
        formatter_class=ShowDefaults,
    )
    p.add_argument("--preset", default="digits", help=f"recipe: {', '.join(preset_names())}, or a path to a .toml file")
    p.add_argument("--data", help=SPEC_HELP + " (default: the preset's)")
    p.add_argument("--study", required=True, metavar="STUDY[,STUDY...]",
                   help="which ablations, comma-separated, or all (the baseline's runs are shared): "
                   + "; ".join(f"{k}: {' vs '.join(v.name for v in vs)}" for k, vs in STUDIES.items()))
    p.add_argument("--seeds", type=int, default=5, help="runs per variant: the preset's seed, +1, ... (an interval needs 2)")
    p.add_argument("--epochs", type=int, help="epochs per run (preset's default otherwise)")
    p.add_argument("--device", help=DEVICE_HELP + " (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--target-error", type=float, default=TARGET_ERROR,
                   help="relu-tanh: the training top-1 error (0–1) whose epochs and seconds to reach are reported")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting for every variant, as in alexnet train (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="folder of the runs and the table")
    p.add_argument("--force", action="store_true",
                   help="use an --out that holds other files or an ablation of other settings: runs of another "
                        "configuration are trained again; no file ablate did not write is removed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.tools.ablate import AblationOptions, run_all

    if not 0 < args.target_error < 1:
        raise ValueError(f"--target-error {args.target_error} must be between 0 and 1")
    options = AblationOptions(
        preset=args.preset, study=args.study, out=args.out, seeds=args.seeds,
        flags={"data.spec": args.data, "epochs": args.epochs, "device": args.device, "batch_size": args.batch_size},
        overrides=args.set, target_error=args.target_error, force=args.force,
    )
    start = time.time()

    def on_run(r, status: str) -> None:
        what = {"done": "done, skipped", "resume": "resuming", "new": "training"}[status]
        same = f" (= {r.same_as})" if r.same_as else ""
        print(f"{r.study}: {r.variant.name}{same} seed {r.seed} → {r.folder}: {what}", flush=True)

    run_all(options, on_run)
    print(f"\ntable: {args.out / 'ablation.md'} (.json, .png); {time.time() - start:.0f} s")
    print((args.out / "ablation.md").read_text(encoding="utf-8"))
    return 0
