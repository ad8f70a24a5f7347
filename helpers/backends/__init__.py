"""Autoencoder backends behind one torch-free protocol (:mod:`helpers.backends.base`).

* ``base``: the :class:`~helpers.backends.base.Backend` protocol (no torch);
* ``resolve``: what ``--model`` and ``--runtime`` name, worked out without torch; ``taef2_spec``: TAEF2's facts
  shared by every runtime (weight files, latent channels, quantization span, tile side);
* ``torch_base``: the PyTorch side (device, precision, fingerprint, :class:`~helpers.backends.torch_base.
  TorchBackend`); ``sd``: Stable Diffusion 1.x; ``taef2``: the TAEF2 network and its tiled backend;
  ``load``: :func:`~helpers.backends.load.load_backend` for a model spec;
* ``onnx_runtime``: TAEF2 on ONNX Runtime (export, graph cache, tiled sessions), without torch;
* ``tiling``: tiled application of a network over numpy arrays, exact halos; ``denoise``: SD's UNet on latents;
* ``sd14``: the full-size SD v1.4 stand-in (``python -m helpers.backends.sd14``); ``tiny``: tiny random SD
  pipelines (tests, CI, notebook 04 offline).

This file imports nothing, so importing the torch-free modules stays torch-free.
"""
