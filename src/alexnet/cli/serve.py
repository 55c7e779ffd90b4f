"""``alexnet serve``: an Open Inference Protocol server over checkpoints and .onnx files (docs/SERVING.md)."""

from __future__ import annotations

import argparse
import sys
import time

from alexnet.runtime import DEVICE_HELP, PRECISION_HELP, PRECISIONS
from alexnet.tools.listen import allowed_hosts, listen, url, warn_if_public


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an inference server: Open Inference Protocol v2 (REST), dynamic batching, Prometheus metrics",
                       description="Serve models over HTTP as KServe's Open Inference Protocol v2 specifies it "
                                   "(/v2/health/live, /v2/models/NAME, /v2/models/NAME/infer with FP32 input or encoded "
                                   "images, Triton's binary tensor data and classification extensions), plus POST /predict for "
                                   "`curl -F image=@photo.jpg` and GET /metrics (Prometheus). Requests that arrive within "
                                   "--max-delay-ms run as one batch. SIGTERM or Ctrl+C lets the requests in flight finish. "
                                   "Needs the [serve] extra: pip install 'alexnet[serve]'.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="a checkpoint, an exported .onnx (fp32 or int8), or a folder in Triton's model repository layout "
                        "(NAME/VERSION/FILE, or a folder of such NAME folders; the highest version is the default); "
                        "a model is named by its file's stem or its folder's name")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another address lets other machines in, with a warning)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free one, the URL printed says which)")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="N",
                   help="images in one model run; a request of more is refused (default 32; 1: no batching)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, metavar="MS",
                   help="how long the first request of a batch waits for others to join it (default 5)")
    p.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="requests waiting per model; past it the server answers 503 with Retry-After at once (default 256)")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S",
                   help="a request not answered this long after it was queued is answered 504 (default 30)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="before it is ready, run each model at every batch size from --max-batch-size down to 1, so that "
                        "its memory is taken before the first request and stays flat (default: on; seconds at the defaults)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (default: auto); an .onnx runs on ONNX Runtime's CPU provider")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP + " (a checkpoint's model; default: fp32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnet.tools.serve import require

    require()
    import uvicorn

    from alexnet.runtime import RuntimeSettings, apply_process_settings, resolve_device
    from alexnet.tools.serve.app import ModelServer, create_app
    from alexnet.tools.serve.batcher import BatchConfig
    from alexnet.tools.serve.repository import check_precision, find_models, load_all

    config = BatchConfig(max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                         timeout_s=args.timeout_s)
    files = find_models(args.models)
    check_precision(files, args.precision)
    device = str(resolve_device(args.device))
    apply_process_settings(RuntimeSettings(device, args.precision, malloc_arenas=1))  # one arena: memory flat under load
    sock = listen(args.host, args.port)
    warn_if_public("alexnet serve", args.host, "use the models")
    try:
        print(f"alexnet serve: loading {len(files)} model file(s) on {device}…", file=sys.stderr, flush=True)
        server = ModelServer(load_all(files, device, args.precision), config)
        if args.warmup:
            started = time.monotonic()
            server.warm_up()
            print(f"alexnet serve: warmed up at batch sizes 1–{config.max_batch_size} in {time.monotonic() - started:.1f} s",
                  file=sys.stderr, flush=True)
        for name in server.models:
            newest = server.find(name)
            print(f"alexnet serve: {name} (versions {', '.join(server.versions(name))}; {newest.description}, "
                  f"{len(newest.classes)} classes) at {url(sock)}/v2/models/{name}", flush=True)
        print(f"alexnet serve: ready at {url(sock)}/  (Ctrl+C to stop)", flush=True)
        app = create_app(server, allowed_hosts(args.host))
        uvicorn_config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=int(config.timeout_s) + 5)
        uvicorn.Server(uvicorn_config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
