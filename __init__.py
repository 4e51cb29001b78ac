"""condi-pipe: Confidence Distillation (ConDi) for efficient video action recognition.

The folders are the pipeline: ``video`` decodes and generates videos, ``storage`` owns every on-disk format,
``pipeline`` runs stages (locks, resume, Dask), ``stages`` holds one function per CLI stage, ``models`` the
teachers and students, ``methods`` the losses and clip samplers.
"""

__version__ = "0.1.0"
