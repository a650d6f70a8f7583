"""The visual 1D introduction behind the entry point ``examples/bimodal_1d.py``:
:mod:`.figures` draws its figures (the numbers they show are computed in the script)."""
