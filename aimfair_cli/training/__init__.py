"""Training: the model, checkpoints, images and the decoded-image cache, the training loop, resume, tracking
and model selection, shared by pretrain, mask and finetune.
"""
