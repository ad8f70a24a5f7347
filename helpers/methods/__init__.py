"""Latent coding methods: the interface (:mod:`.base`), the registry (:mod:`.registry`) and one subpackage per
method (:mod:`.palette`: the 2022 palette methods and raw 8-bit latents; :mod:`.tc`: transform coding).

Nothing is imported here, so a method's modules can import :mod:`.base` without importing the registry.
"""
