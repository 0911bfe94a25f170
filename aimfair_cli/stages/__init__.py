"""One module per pipeline stage (pretrain, mask, finetune, evaluate, ...).

Each takes a config dataclass or keyword-only arguments, reads and writes files, returns a result object and
raises typed errors; the CLI modules in `aimfair_cli/cli/` only resolve options, call it and print.
"""
