"""The ablation study behind the entry point ``examples/ablations.py``: :mod:`.figures`
draws its figures (the settings, training and measures are in the script)."""
