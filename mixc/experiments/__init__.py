"""Ablations and mixture fitting: variant mixes, random designs, the proxy-run runner, fit, propose."""
