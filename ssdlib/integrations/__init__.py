"""Adapters that put ssdlib's defenses where users of other ML-privacy toolkits already work.

:mod:`ssdlib.integrations.art`: SSD as a postprocessing defense of IBM's Adversarial Robustness Toolbox (the
optional extra ``ssdlib[art]``). Each adapter imports its toolkit only when it is imported itself.
"""
