"""Model-free math of Confidence Distillation: ``losses`` (torch), ``samplers`` and ``metrics`` (NumPy).

The submodules are not imported here, so the NumPy-only evaluation code does not pull in torch.
"""
