"""Torch execution: the runtime a model runs under (device, dtype, layout, threads), batched clip inference, the
clip loader and the training loop with its multi-process variant. Stages import it; it never imports a stage."""
