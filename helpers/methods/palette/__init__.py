"""The 2022 notebook's method: 8-bit latents, a palette + dithering, a lossless coder (and the raw 8-bit
latents it started from).

:mod:`.quantize` (8-bit quantization, libimagequant and latent k-means palettes), :mod:`.entropy` (the zlib,
arith and lzma coders of palette + index map), :mod:`.method` (the registered methods ``liq`` (id 0),
``kmeans`` (1) and ``raw`` (2)).
"""
