"""Training pipeline: data cache, losses, the (DDP-capable) loop, checkpoints, validation, configs
and export.

``python -m imfcodec.train --config small-cpu`` trains the shipped default model; the CLI's
``imfcodec train`` calls :func:`main`. Library use: ``train(load_config("tiny").replace(...))``.
"""

from imfcodec.train.config import TrainConfig, list_configs, load_config


def train(config, resume=None):
    """See :func:`imfcodec.train.trainer.train` (imported lazily: torch is heavy)."""
    from imfcodec.train.trainer import train as _train

    return _train(config, resume=resume)


def main(argv=None):
    """See :func:`imfcodec.train.__main__.main`."""
    from imfcodec.train.__main__ import main as _main

    return _main(argv)


def export_model(model, path, fp16=True, metadata=None):
    """See :func:`imfcodec.train.export.export_model`."""
    from imfcodec.train.export import export_model as _export

    return _export(model, path, fp16=fp16, metadata=metadata)


__all__ = ["TrainConfig", "list_configs", "load_config", "train", "main", "export_model"]
