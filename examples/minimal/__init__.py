"""The exercise in its barest form: ``nf.py`` (Sec. 3) and ``fm.py`` (Sec. 4), each a script of
about 100 lines on numpy and minigrad; ``cli.py`` holds their shared command line."""
