"""SS-CXR as a transformers model family. Every other module of this folder is copied into each saved model as its
Hub remote code, so they import only torch, transformers, numpy, Pillow, pydicom and each other (relatively)."""
