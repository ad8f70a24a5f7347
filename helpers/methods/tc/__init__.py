"""Transform coding of latents (method ``tc``, id 3): :mod:`.tcoder` (wavelet + decoder-aware KLT, scalar
quantization, context-adaptive range coding), :mod:`.tc_train` (its trained tables), :mod:`.method` (the
registered method).
"""
