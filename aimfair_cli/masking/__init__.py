"""The method (AIM-Fair, paper §3): tensor scores and selection, the mask file, the tensor-selection
strategies of fine-tuning and the synthetic sets the mask and fine-tuning read.
"""
