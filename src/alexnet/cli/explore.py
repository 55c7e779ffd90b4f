"""``alexnet explore``: a local web page over a checkpoint (docs/EXPLORE.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from alexnet.data.sources import SPEC_HELP
from alexnet.errors import AlexNetError, at_least
from alexnet.runtime import DEVICE_HELP
from alexnet.tools.listen import allowed_hosts, listen, url, warn_if_public
from alexnet.training.run_folder import RunFolder

WAIT_S = 1.0  # seconds between looks for a training run's first checkpoint


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="a local web page to look inside a checkpoint: top-5, layers, filters, Grad-CAM, neighbours",
                       description="Serve a page (offline: no CDN, nothing downloaded) that classifies an uploaded or a "
                                   "data-set image and shows the crop the network saw, every layer's maps (two towers side "
                                   "by side), conv1's kernels (Fig. 3), Grad-CAM and occlusion heat maps, the nearest "
                                   "training images in fc7 (Fig. 4), a unit's arithmetic (CNN Explainer's view), the network drawn "
                                   "as Fig. 2, a convolution's geometry, what a unit sees (top-9 patches, a feature "
                                   "visualisation) and, with --run, the run's curves, confusion matrix and configuration, "
                                   "followed live while it trains. Needs the [explore] extra: pip install 'alexnet[explore]'.")
    p.add_argument("--checkpoint", type=Path, metavar="C", help="checkpoint file (default with --run: RUN/checkpoints/best.pt)")
    p.add_argument("--data", help=SPEC_HELP + " (default: the data the checkpoint was trained on, if it opens)")
    p.add_argument("--run", type=Path, metavar="R", help="a run folder, for the Run view (curves, configuration); a run "
                                                          "still training is followed live (its last.pt, waited for)")
    p.add_argument("--features", type=Path, metavar="BANK.npy",
                   help="a bank from `alexnet features --out BANK.npy` (fc7 of a split; default: computed on start over train)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets other machines in, with a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one, the URL printed says which)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto)")
    p.add_argument("--bank-limit", type=int, default=5000, metavar="N",
                   help="training images whose fc7 codes are computed on start when no --features is given (default 5000; 0: all)")
    p.add_argument("--eval-limit", type=int, default=2000, metavar="N",
                   help="test (else val) images the confusion matrix covers (default 2000; 0: all)")
    p.set_defaults(func=run)


def _checkpoint(args: argparse.Namespace) -> Path:
    """--checkpoint, else the run's: best.pt of a finished run, last.pt of one still training (waited for
    until its first epoch has ended, so that the page can follow the run from the start)."""
    if args.checkpoint is not None:
        return args.checkpoint
    if args.run is None:
        raise AlexNetError("explore needs --checkpoint C (or --run R, whose checkpoints/best.pt it uses)")
    folder = RunFolder(args.run, write=False)  # run() has checked it is a run folder
    training = not folder.report_json.is_file()
    said = False
    while True:
        for path in ((folder.last, folder.best) if training else (folder.best, folder.last)):
            if path.is_file():
                return path
        if not training:
            raise AlexNetError(f"{args.run}: no checkpoints/best.pt or last.pt; pass --checkpoint")
        if not said:
            print(f"alexnet explore: {args.run} is training; waiting for its first checkpoint (the end of its first epoch)…",
                  file=sys.stderr, flush=True)
            said = True
        time.sleep(WAIT_S)


def run(args: argparse.Namespace) -> int:
    from alexnet.tools.explore import require_server

    require_server()
    import uvicorn

    from alexnet.runtime import RuntimeSettings, apply_process_settings, resolve_device
    from alexnet.tools.explore.app import create_app
    from alexnet.tools.explore.session import ExploreConfig, Session

    at_least("--bank-limit", args.bank_limit, 0)
    at_least("--eval-limit", args.eval_limit, 0)
    device = str(resolve_device(args.device))
    if args.run is not None:
        RunFolder(args.run, write=False).read_config()  # one line when it is not a run folder, before the port is taken
    if args.checkpoint is not None and not args.checkpoint.is_file():  # so too a missing file, before "loading …"
        raise AlexNetError(f"--checkpoint {args.checkpoint}: {'not a file' if args.checkpoint.exists() else 'no such file'}")
    sock = listen(args.host, args.port)  # held while a training run's first checkpoint is waited for
    try:
        config = ExploreConfig(checkpoint=_checkpoint(args), data=args.data, run=args.run, features=args.features,
                               device=device, bank_limit=args.bank_limit, eval_limit=args.eval_limit)
    except BaseException:
        sock.close()
        raise
    apply_process_settings(RuntimeSettings(config.device))  # the model runs as Session's prepare_model puts it
    warn_if_public("alexnet explore", args.host, "use the page and upload images")
    try:
        bank = f"; fc7 codes of up to {config.bank_limit or 'all'} training images" if not config.features else ""
        print(f"alexnet explore: loading {config.checkpoint}{bank}…", file=sys.stderr, flush=True)
        session = Session(config)
        print(f"alexnet explore: {config.checkpoint} at {url(sock)}/  (Ctrl+C to stop)", flush=True)
        app = create_app(session, allowed_hosts(args.host))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
