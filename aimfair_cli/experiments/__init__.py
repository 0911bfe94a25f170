"""The drivers: `aimfair demo` and `aimfair study` build pipelines of stage steps from the study catalogue
and write the report. Only `cli/` sits above this layer.
"""
