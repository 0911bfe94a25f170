"""The fairness numbers: the (target, protected) cells and bias ratios, per-cell metrics, paired statistics
over seeds, and the charts that draw them. Below everything but the core.
"""
