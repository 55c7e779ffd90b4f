"""Weights from other frameworks (torchvision, Caffe) into this package's models, and exports."""
