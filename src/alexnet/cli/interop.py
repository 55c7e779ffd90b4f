"""``alexnet import`` (torchvision, Caffe weights → checkpoints) and ``alexnet export`` (ONNX fp32
or int8, TorchScript, safetensors)."""

from __future__ import annotations

import argparse

from alexnet import checkpoint
from alexnet.data.sources import SPEC_HELP
from alexnet.tools.interop import caffe, export, quantize


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="turn torchvision or Caffe AlexNet weights into a checkpoint",
                       description="Import pretrained weights as a self-describing checkpoint (ImageNet class names, "
                                   "the source's preprocessing). Every expected tensor is checked: present, the right "
                                   "shape, nothing left over.")
    kinds = p.add_subparsers(dest="source", metavar="SOURCE", required=True)

    tv = kinds.add_parser("torchvision", help="torchvision's AlexNet state dict (alexnet-owt-7be5be79.pth) → alexnet_owt",
                          description="torchvision's AlexNet state dict → an alexnet_owt checkpoint with torchvision's "
                                      "preprocessing (resize 256, centre crop 224, ImageNet mean/std).")
    tv.add_argument("file", metavar="FILE.pth", help="the state dict file (read with torch.load(weights_only=True))")
    tv.add_argument("--out", required=True, metavar="C", help="checkpoint to write")
    tv.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    tv.set_defaults(func=run_torchvision)

    cf = kinds.add_parser("caffe", help="bvlc_alexnet / bvlc_reference_caffenet .caffemodel → checkpoint",
                          description="A binary Caffe NetParameter (V1 'layers' or V2 'layer') → a bvlc_alexnet or "
                                      "caffenet checkpoint; conv1 is turned from BGR to RGB input, the mean image kept "
                                      "as the checkpoint's statistics. No Caffe installation needed.")
    cf.add_argument("file", metavar="FILE.caffemodel", help="the weights")
    cf.add_argument("--mean", metavar="FILE.binaryproto", default=None,
                    help="Caffe's mean image (BGR [1,3,256,256]); default: ImageNet's channel mean everywhere")
    cf.add_argument("--arch", default=None, choices=tuple(caffe.ARCHS),
                    help="alexnet: bvlc_alexnet (LRN after ReLU); caffenet: bvlc_reference_caffenet (pool before LRN); "
                         "default: read from the file's layer order, which a given --arch must agree with")
    cf.add_argument("--out", required=True, metavar="C", help="checkpoint to write")
    cf.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    cf.set_defaults(func=run_caffe)
    add_export_parser(sub)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a checkpoint's model to ONNX (fp32 or int8), TorchScript or safetensors",
                        description="ONNX (dynamic batch axis; input 'images' = preprocessed float [N,C,S,S], output "
                                    "'logits'; the checkpoint's architecture, classes, input size, preprocessing with "
                                    "its statistics and sha256 in the model's metadata_props, so alexnet eval and "
                                    "predict take the .onnx file), TorchScript (traced), or safetensors (weights + "
                                    "checkpoint metadata). --quantize int8 runs ONNX Runtime's quantizer on the ONNX "
                                    "export: static (QDQ, activation ranges calibrated on --images N images of "
                                    "--calibrate DATA through the checkpoint's own preprocessing) or --mode dynamic "
                                    "(MatMul/Gemm weights only, no calibration).")
    ex.add_argument("--checkpoint", required=True, metavar="C", help="checkpoint file")
    ex.add_argument("--format", required=True, choices=export.FORMATS, help="output format")
    ex.add_argument("--out", required=True, metavar="F", help="file to write")
    ex.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ex.add_argument("--quantize", choices=("int8",), default=None,
                    help="int8 ONNX by onnxruntime.quantization (needs --format onnx)")
    ex.add_argument("--mode", choices=quantize.MODES, default=None,
                    help="static (default): quantize_static, QDQ, U8S8, per-channel weights, MinMax calibration; "
                         "dynamic: quantize_dynamic of the MatMul/Gemm weights, activations quantized at run time")
    ex.add_argument("--calibrate", metavar="DATA", default=None,
                    help="static: the data whose images set the activation ranges: " + SPEC_HELP)
    ex.add_argument("--split", default=None, metavar="S",
                    help=f"static: the split of --calibrate to sample (default {quantize.DEFAULT_SPLIT})")
    ex.add_argument("--images", type=int, default=None, metavar="N",
                    help=f"static: calibration images, a random sample of the split (default {quantize.DEFAULT_IMAGES})")
    ex.set_defaults(func=run_export)


def _check_out(args: argparse.Namespace) -> None:
    """--out, before any work: a file name (not a folder, not under a file), new unless --force."""
    from alexnet.atomic import check_output_path

    check_output_path(args.out, args.force, "--out")


def run_torchvision(args: argparse.Namespace) -> int:
    from alexnet.tools.interop.torchvision import import_torchvision

    _check_out(args)
    ckpt = import_torchvision(args.file)
    checkpoint.save(args.out, ckpt, overwrite=args.force)
    print(f"wrote {args.out}: {ckpt.model}, {ckpt.num_classes} classes, input {ckpt.input_size}")
    return 0


def run_caffe(args: argparse.Namespace) -> int:
    _check_out(args)
    ckpt = caffe.import_caffe(args.file, args.arch, args.mean)
    checkpoint.save(args.out, ckpt, overwrite=args.force)
    print(f"wrote {args.out}: {ckpt.model}, {ckpt.num_classes} classes, input {ckpt.input_size}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    q = quantize.from_flags(args.format, args.quantize, args.mode, args.calibrate, args.split, args.images)
    _check_out(args)
    meta = export.export(args.checkpoint, args.format, args.out, overwrite=args.force, quantization=q)
    print(f"wrote {args.out} ({args.format if meta is None else meta.describe()})")
    return 0
