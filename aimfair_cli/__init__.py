"""aimfair: repair unfair image classifiers with contextual synthetic data (AIM-Fair, CVPR 2025).

The library lives beside `cli/`; it never imports typer and never prints. Heavy dependencies
(torch, diffusers, transformers, openai) are imported inside the functions that need them. Its layers, from the
top, import only downward (docs/architecture.md): experiments/ -> stages/, data/ -> masking/, methods/,
generators/, writers/ -> training/, render/ -> fairness/ -> core/.
"""

__version__ = "0.1.0"
