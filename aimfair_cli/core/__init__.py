"""The small core every layer stands on: typed errors, safe file writes, options and config files, manifests,
tasks and prompt files, run-folder layout, progress, provenance, torch.distributed and the model hub.
Nothing here imports another aimfair_cli package.
"""
