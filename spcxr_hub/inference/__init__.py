"""Inference: where tensors go (`devices`), and the lean and fast CPU deployment paths (`deploy`)."""
