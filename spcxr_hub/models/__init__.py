"""Model families: `spcxr/` is SS-CXR; `registration.py` registers it with transformers' Auto classes."""
