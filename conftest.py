"""Test-session settings shared by tests/ and parity_tests/."""
import os

# The models under test are tiny: one BLAS thread avoids OpenBLAS hand-off overhead and
# oversubscription on small CI machines (set before numpy is first imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
